"""A sale left without its order gets exactly one, with no client's help (docs/contract.md §3.6).

A purchase is two replicated writes: the catalog's sale under the idempotency key, then the
order. Whatever breaks between them (a crash, a failover, an unreachable replica), the sale
is durable; the order primary's reconciler finds it in the catalog's sales and records its
order. Here the break is made exact: the sale is sent straight to the catalog primary's
internal route (as an order primary would) and the order tier never hears of it.
"""

from __future__ import annotations

import json
from typing import Any

from bazar.testing.cluster import Cluster, wait_until

RECONCILE_DEADLINE_S = 10.0  # the reconciler runs every second


def front_end_orders(cluster: Cluster) -> list[dict[str, Any]]:
    status, body = cluster.json("GET", "/orders?limit=1000")
    assert status == 200, body
    found: list[dict[str, Any]] = body["data"]
    return found


def sell_directly(cluster: Cluster, key: str, book_id: int, quantity: int) -> dict[str, Any]:
    primary = cluster.cluster_info()["catalog"]["primary"]
    status, body = cluster.json(
        "POST",
        "/internal/sell",
        base=cluster.replica_urls("catalog")[primary],
        body=json.dumps(
            {"sells": [{"idempotency_key": key, "book_id": book_id, "quantity": quantity}]}
        ).encode(),
        headers={"Authorization": f"Bearer {cluster.secret}", "Content-Type": "application/json"},
    )
    assert status == 200, body
    result: dict[str, Any] = body["outcomes"][0]["result"]
    return result


def stock(cluster: Cluster, book_id: int) -> int:
    status, body = cluster.json("GET", f"/info/{book_id}")
    assert status == 200, body
    return int(body["data"]["stock"])


def buy(cluster: Cluster, key: str, book_id: int, quantity: int) -> tuple[int, dict[str, str], Any]:
    status, headers, body = cluster.request(
        "POST",
        f"/purchase/{book_id}",
        body=json.dumps({"quantity": quantity}).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": key},
    )
    return status, headers, json.loads(body)


def test_a_sale_without_its_order_gets_exactly_one(cluster: Cluster) -> None:
    before_orders = front_end_orders(cluster)
    before_stock = stock(cluster, 2)
    sale = sell_directly(cluster, "orphaned-sale-1", 2, 3)
    assert sale["status"] == "ok", sale

    # No client retries: the reconciler records the order by itself.
    wait_until(
        lambda: len(front_end_orders(cluster)) == len(before_orders) + 1,
        RECONCILE_DEADLINE_S,
        "the reconciler recorded the orphaned sale's order",
    )
    (order,) = [o for o in front_end_orders(cluster) if o not in before_orders]
    assert (order["book_id"], order["quantity"]) == (2, 3), order
    assert order["total_cost"] == round(3 * sale["unit_cost_cents"] / 100, 2), (order, sale)

    # The client's retry under the same key gets that order, as a replay, and sells nothing.
    status, headers, body = buy(cluster, "orphaned-sale-1", 2, 3)
    assert status == 200, body
    assert body["order"] == order
    assert headers.get("idempotent-replayed") == "true", headers
    # Other parameters under that key are refused, by the order tier as by the catalog.
    status, _, body = buy(cluster, "orphaned-sale-1", 2, 1)
    assert (status, body["error"]["code"]) == (422, "idempotency_key_reused"), body
    assert stock(cluster, 2) == before_stock - 3
    assert len(front_end_orders(cluster)) == len(before_orders) + 1


def test_an_out_of_stock_sale_is_owed_no_order(cluster: Cluster) -> None:
    before_orders = front_end_orders(cluster)
    sale = sell_directly(cluster, "orphaned-refusal-1", 3, 1000)
    assert sale["status"] == "out_of_stock", sale
    # A sale that was recorded afterwards proves a reconciler round has passed over it.
    done = sell_directly(cluster, "orphaned-sale-2", 3, 1)
    assert done["status"] == "ok", done
    wait_until(
        lambda: len(front_end_orders(cluster)) == len(before_orders) + 1,
        RECONCILE_DEADLINE_S,
        "the reconciler recorded the later sale's order",
    )
    (order,) = [o for o in front_end_orders(cluster) if o not in before_orders]
    assert (order["book_id"], order["quantity"]) == (3, 1), order
    # The refusal is stored under its key: a retry is answered 409 again, as a replay.
    status, headers, body = buy(cluster, "orphaned-refusal-1", 3, 1000)
    assert (status, body["error"]["code"]) == (409, "out_of_stock"), body
    assert headers.get("idempotent-replayed") == "true", headers
