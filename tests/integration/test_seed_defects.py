"""The student implementation's defects (docs/seed.md, "Defects and limitations" and the
correctness probes), each replayed against Bazar: one test per defect that no other test
already covers, its docstring naming the defect.

Covered elsewhere, not repeated here:
- 3 (lost updates, oversell under concurrency) and 4 (replicas diverging): 300 buyers of 100
  copies and the mixed load in `test_concurrency.py` (replica digests identical).
- 5 (a dead replica fails reads): kill -9 and SIGSTOP of a catalog replica under readers in
  `tests/fault/test_read_availability.py`.
- 7 (no persisted orders): `/orders` in `test_api.py`, orders == sales in `test_concurrency.py`.
- 8, in part: a miss costs one backend read (not two, as with replica-keyed entries), the size
  bound, the TTL, and selective invalidation in `test_cache.py`.
- 9 (slash-less URLs cost a 301): `test_trailing_slash_is_optional_without_redirect`.
- 10 (dev server, committed secrets, `ALLOWED_HOSTS=*`): loopback binding and secret files in
  `test_api.py`; 300 connections at once without a reset in `test_concurrency.py`.
- 12 (packaging): not a behaviour of the running service.

The module's cluster runs a catalog of its own (`CATALOG`): the seed's four books with its
stock and cost, plus books whose topics hold `.`, `%` and `_`, and one sold out. Each test
uses its own books, so none depends on another's stock.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bazar.testing.cluster import Cluster, wait_until
from bazar.testing.probe import Reply, assert_error, raw_request, settled_snapshot, snapshot

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

CATALOG = [
    {
        "id": 1,
        "title": "How to get a good grade in DOS in 40 minutes a day",
        "topic": "Distributed Systems",
        "stock": 6,
        "cost": 10,
    },
    {"id": 2, "title": "RPCs for Noobs", "topic": "Distributed Systems", "stock": 5, "cost": 15},
    {
        "id": 3,
        "title": "Xen and the Art of Surviving Undergraduate School",
        "topic": "Undergraduate School",
        "stock": 4,
        "cost": 12,
    },
    {
        "id": 4,
        "title": "Cooking for the Impatient Undergrad",
        "topic": "Undergraduate School",
        "stock": 3,
        "cost": 20,
    },
    {"id": 5, "title": "Async I/O in Node.js", "topic": "Node.js", "stock": 10, "cost": 9.5},
    {"id": 6, "title": "Percent Signs", "topic": "100% Pure_Python", "stock": 10, "cost": 5},
    {"id": 7, "title": "Dotted Names", "topic": "a.b", "stock": 10, "cost": 7},
    {"id": 8, "title": "Undotted Names", "topic": "axb", "stock": 10, "cost": 7},
    {"id": 9, "title": "Sold Out", "topic": "Rare Books", "stock": 0, "cost": 50},
]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("seed_defects")
    catalog = directory / "catalog.json"
    catalog.write_text(json.dumps(CATALOG))
    running = Cluster(directory / "cluster", catalog_file=catalog).start()
    try:
        wait_until(lambda: all_in_sync(running), 10, "every replica in sync")
        yield running
    finally:
        running.stop()


# ---------------------------------------------------------------- helpers


def all_in_sync(cluster: Cluster) -> bool:
    info = cluster.cluster_info()
    return all(
        replica["state"] == "in_sync"
        for tier in ("catalog", "order")
        for replica in info[tier]["replicas"]
    )


def send(
    cluster: Cluster,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = None,
    headers: list[tuple[str, str | bytes]] | None = None,
) -> Reply:
    """Exactly these headers (and Content-Type if given), through http.client."""
    sent = list(headers or [])
    if content_type is not None:
        sent.append(("Content-Type", content_type))
    return raw_request(cluster.url, method, path, sent, body)


def replica_stocks(cluster: Cluster, book_id: int) -> dict[str, int]:
    """The committed stock of `book_id` on every catalog replica, by name."""
    stocks = {}
    for name, url in cluster.replica_urls("catalog").items():
        status, body = cluster.internal("GET", url, f"/books/{book_id}")
        assert status == 200, (name, status, body)
        stocks[name] = int(body["data"]["stock"])
    return stocks


def settled_stocks(cluster: Cluster, book_id: int) -> int:
    """The stock of `book_id` once every catalog replica holds the same one."""
    seen: list[dict[str, int]] = []

    def agree() -> bool:
        seen[:] = [replica_stocks(cluster, book_id)]
        return len(set(seen[0].values())) == 1

    wait_until(agree, 10, f"the catalog replicas agree on the stock of book {book_id}")
    return next(iter(seen[0].values()))


def front_end_stock(cluster: Cluster, book_id: int) -> int:
    status, body = cluster.json("GET", f"/info/{book_id}")
    assert status == 200, body
    return int(body["data"]["stock"])


def stock_in(body: Any, book_id: int) -> int:
    (stock,) = [book["stock"] for book in body["data"] if book["id"] == book_id]
    return int(stock)


def cache_stats(cluster: Cluster) -> dict[str, Any]:
    stats: dict[str, Any] = cluster.cluster_info()["cache"]
    return stats


def orders(cluster: Cluster) -> list[dict[str, Any]]:
    status, body = cluster.json("GET", "/orders?limit=1000")
    assert status == 200, body
    assert body["next"] is None
    found: list[dict[str, Any]] = body["data"]
    return found


def gone(cluster: Cluster, url: str) -> bool:
    """Nothing answers at `url` any more (refused, or reset by the dying process)."""
    try:
        return cluster.request("GET", "/internal/commit", base=url)[0] == 0
    except OSError:
        return False


def catalog_primary_url(cluster: Cluster) -> str:
    primary = cluster.cluster_info()["catalog"]["primary"]
    return cluster.replica_urls("catalog")[primary]


def internal_post(cluster: Cluster, base: str, path: str, value: object) -> tuple[int, Any]:
    return cluster.json(
        "POST",
        path,
        base=base,
        body=json.dumps(value).encode(),
        headers={"Authorization": f"Bearer {cluster.secret}", "Content-Type": JSON},
    )


# ---------------------------------------------------------------- 1: replica writes


def test_sequential_one_copy_purchases_sell_exactly_the_stock(seeded: Cluster) -> None:
    """Defect 1 (replica write broken: each order replica decremented only "its" catalog DB,
    so book 2, stock 5, accepted 10 of 14 sequential one-copy purchases). Here: 14 purchases
    of one copy of book 2, one after the other, as the seed's client sends them (PUT, form
    `item_number=1`): exactly the first 5 succeed, the other 9 are 409 out_of_stock, every
    catalog replica ends at 0, and there are exactly 5 orders for book 2."""
    statuses = []
    for _ in range(14):
        reply = send(seeded, "PUT", "/purchase/2/", b"item_number=1", FORM)
        statuses.append(reply.status)
        if reply.status == 409:
            assert_error(reply, 409, "out_of_stock")
        else:
            assert reply.status == 200, reply
            assert reply.json["order"]["quantity"] == 1
    assert statuses == [200] * 5 + [409] * 9
    assert settled_stocks(seeded, 2) == 0
    assert set(replica_stocks(seeded, 2).values()) == {0}
    assert front_end_stock(seeded, 2) == 0
    for_book = [order for order in orders(seeded) if order["book_id"] == 2]
    assert [order["quantity"] for order in for_book] == [1] * 5


# ---------------------------------------------------------------- 2: a failed sale is not "done"


def test_a_purchase_the_catalog_cannot_make_is_never_reported_done(tmp_path: Path) -> None:
    """Defect 2 (the order service ignored the catalog write's result and reported success
    on a 500 or `database is locked`), with 5 and 6 (a dead catalog replica made purchases
    fail as 200 "Not allowed to purchase"). Here the catalog primary is killed (kill -9,
    no restart) and a purchase is sent at once: it must not be 200 unless the sale really
    happened (a failover may have made it on another primary): otherwise 503 `unavailable`
    with Retry-After and the key, no order, and the stock unchanged on the surviving
    replica."""
    with Cluster(tmp_path / "c") as cluster:
        wait_until(lambda: all_in_sync(cluster), 10, "every replica in sync")
        view = cluster.cluster_info()["catalog"]
        (primary,) = [r for r in view["replicas"] if r["name"] == view["primary"]]
        (survivor,) = [r for r in view["replicas"] if r["name"] != view["primary"]]
        stock = replica_stocks(cluster, 1)[survivor["name"]]
        assert stock > 0

        os.kill(int(primary["pid"]), signal.SIGKILL)  # a replica of this test's own cluster
        wait_until(lambda: gone(cluster, primary["url"]), 10, "the killed catalog primary is gone")
        key = uuid.uuid4().hex
        reply = send(cluster, "PUT", "/purchase/1", headers=[("Idempotency-Key", key)])
        if reply.status == 200:  # only after a real sale on a new primary
            order = reply.json["order"]
            assert (order["book_id"], order["quantity"]) == (1, 1)
            assert [o["id"] for o in orders(cluster)] == [order["id"]]
            status, body = cluster.internal("GET", survivor["url"], "/books/1")
            assert (status, body["data"]["stock"]) == (200, stock - 1), body
        else:
            assert_error(reply, 503, "unavailable")
            assert reply.headers.get("retry-after", "").isdigit(), reply.headers
            assert reply.headers.get("idempotency-key") == key, reply.headers
            assert orders(cluster) == []
            # Definitely not sold: no sale record, so no order is ever owed.
            for name, digest in cluster.digests("order").items():
                assert digest["tables"]["orders"]["rows"] == 0, (name, digest)
            for name, digest in cluster.digests("catalog").items():
                assert digest["tables"]["sales"]["rows"] == 0, (name, digest)
            status, body = cluster.internal("GET", survivor["url"], "/books/1")
            assert (status, body["data"]["stock"]) == (200, stock), body


# ---------------------------------------------------------------- 6: error semantics


HTML_CASES = [
    ("GET", "/nope", None, None, 404, "not_found"),
    ("GET", "/info/999", None, None, 404, "not_found"),
    ("GET", "/info/abc", None, None, 422, "invalid_request"),
    ("GET", "/info/1.json", None, None, 422, "invalid_request"),
    ("GET", "/info.json", None, None, 404, "not_found"),
    ("GET", "/search/", None, None, 422, "invalid_request"),
    ("GET", "/purchase/1", None, None, 405, "method_not_allowed"),
    ("DELETE", "/info/1", None, None, 405, "method_not_allowed"),
    ("POST", "/search/x", None, None, 405, "method_not_allowed"),
    ("PUT", "/purchase/3", b'{"item_number": "abc"}', JSON, 422, "invalid_request"),
    ("PUT", "/purchase/3", b"1", "text/plain", 415, "unsupported_media_type"),
    ("PUT", "/purchase/424242", None, None, 404, "not_found"),
    ("PATCH", "/books/1", b'{"stock_delta": 1}', JSON, 401, "unauthorized"),
]


@pytest.mark.parametrize("accept", ["text/html", BROWSER_ACCEPT], ids=["html", "browser"])
@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status", "code"),
    HTML_CASES,
    ids=[f"{case[4]}-{case[0]}-{case[1]}" for case in HTML_CASES],
)
def test_errors_requested_as_html_are_still_json(
    seeded: Cluster,
    accept: str,
    method: str,
    path: str,
    body: bytes | None,
    content_type: str | None,
    status: int,
    code: str,
) -> None:
    """Defect 6 (any DRF error requested with `Accept: text/html` was a 500
    TemplateDoesNotExist; Django's own 404/500 were HTML debug pages): an error is the JSON
    error body with its status, whatever the client accepts."""
    reply = send(seeded, method, path, body, content_type, [("Accept", accept)])
    assert_error(reply, status, code)
    assert b"<html" not in reply.raw.lower()


def test_an_out_of_stock_purchase_is_409_and_sells_nothing(seeded: Cluster) -> None:
    """Defect 6 (every failed purchase was 200 `{"data": "Not allowed to purchase"}`,
    indistinguishable from a crash): book 9 has no stock; a purchase is 409 out_of_stock,
    the stock stays 0 on every replica and no order is made."""
    before = len(orders(seeded))
    for body, content_type in [(None, None), (b"item_number=1", FORM), (b'{"quantity": 1}', JSON)]:
        assert_error(send(seeded, "PUT", "/purchase/9/", body, content_type), 409, "out_of_stock")
    assert set(replica_stocks(seeded, 9).values()) == {0}
    assert len(orders(seeded)) == before


FAILED_PURCHASES = [
    # (id, path, body, content type, status, code): the seed answered each one 200.
    ("more-than-stock", "/purchase/3", b'{"item_number": 5}', JSON, 409, "out_of_stock"),
    ("unknown-id", "/purchase/99", None, None, 404, "not_found"),
    ("non-numeric-id", "/purchase/abc", None, None, 422, "invalid_request"),
    ("overflowing-id", "/purchase/99999999999999999999", None, None, 422, "invalid_request"),
    ("item-number-null", "/purchase/3", b'{"item_number": null}', JSON, 422, "invalid_request"),
    ("item-number-float", "/purchase/3", b'{"item_number": 1.5}', JSON, 422, "invalid_request"),
    ("item-number-text", "/purchase/3", b'{"item_number": "abc"}', JSON, 422, "invalid_request"),
    ("form-item-number-text", "/purchase/3", b"item_number=abc", FORM, 422, "invalid_request"),
    ("malformed-json", "/purchase/3", b'{"item_number": ', JSON, 422, "invalid_request"),
    ("json-array", "/purchase/3", b"[1]", JSON, 422, "invalid_request"),
]


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "code"),
    [case[1:] for case in FAILED_PURCHASES],
    ids=[case[0] for case in FAILED_PURCHASES],
)
def test_a_failed_purchase_is_never_200_and_changes_no_stock(
    seeded: Cluster,
    path: str,
    body: bytes | None,
    content_type: str | None,
    status: int,
    code: str,
) -> None:
    """Defect 6 (the seed answered every failed purchase 200 "Not allowed to purchase" and
    a JSON array body 500): each of the seed's failing purchases gets its own error status
    and code, and no catalog replica's stock changes."""
    stock = settled_stocks(seeded, 3)
    count = len(orders(seeded))
    for method in ("PUT", "POST"):
        reply = send(seeded, method, path, body, content_type)
        assert reply.status != 200, reply
        assert_error(reply, status, code)
    assert set(replica_stocks(seeded, 3).values()) == {stock}
    assert len(orders(seeded)) == count


@pytest.mark.parametrize("book_id", ["99", "8888", "424242"])
def test_an_unknown_book_is_404_and_not_cached(seeded: Cluster, book_id: str) -> None:
    """Defects 6 and 8 (an unknown numeric id was 200 with null fields, and that answer was
    cached): 404 not_found, every time, and the cache neither stores nor serves it."""
    before = cache_stats(seeded)
    for _ in range(3):
        assert_error(send(seeded, "GET", f"/info/{book_id}"), 404, "not_found")
        assert_error(send(seeded, "GET", f"/info/{book_id}/"), 404, "not_found")
    after = cache_stats(seeded)
    assert after["entries"] == before["entries"]
    assert after["hits"] == before["hits"]
    assert after["misses"] == before["misses"] + 6


@pytest.mark.parametrize("book_id", ["0", "-1", "abc", "1.5"])
def test_an_id_that_is_not_a_positive_integer_is_422(seeded: Cluster, book_id: str) -> None:
    """Defect 6 (`/info/0/`, `/info/-1/` were 200 with null fields, `/info/abc/` 200 "no
    books with this name", `/info/1.5/` a DRF 404): 422 invalid_request."""
    assert_error(send(seeded, "GET", f"/info/{book_id}"), 422, "invalid_request")


NON_POSITIVE_QUANTITIES = [
    ("json-item-number-minus-5", b'{"item_number": -5}', JSON),
    ("json-item-number-zero", b'{"item_number": 0}', JSON),
    ("json-quantity-minus-5", b'{"quantity": -5}', JSON),
    ("json-item-number-minus-5-text", b'{"item_number": "-5"}', JSON),
    ("form-item-number-minus-5", b"item_number=-5", FORM),
    ("form-item-number-zero", b"item_number=0", FORM),
]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [case[1:] for case in NON_POSITIVE_QUANTITIES],
    ids=[case[0] for case in NON_POSITIVE_QUANTITIES],
)
def test_a_negative_or_zero_quantity_changes_nothing(
    seeded: Cluster, body: bytes, content_type: str
) -> None:
    """Defect 6 (no input validation: `item_number=-5` was "Purchase done" and the stock
    went UP by 5; `item_number=0` was "Purchase done"): 422 invalid_request, and nothing
    changes on any replica (tables, idempotency records, log position)."""
    before = settled_snapshot(seeded)
    for method in ("PUT", "POST"):
        assert_error(
            send(seeded, method, "/purchase/3", body, content_type), 422, "invalid_request"
        )
    assert snapshot(seeded) == before


@pytest.mark.parametrize(
    "value",
    [
        {"idempotency_key": "seed-defect-6-zero", "book_id": 3, "quantity": 0},
        {"idempotency_key": "seed-defect-6-negative", "book_id": 3, "quantity": -5},
    ],
    ids=["zero", "negative"],
)
def test_an_internal_sale_of_a_non_positive_quantity_is_refused(
    seeded: Cluster, value: dict[str, Any]
) -> None:
    """Defect 6 (the catalog's open PUT accepted any stock, a negative one included): even
    the catalog primary's internal sale, called with the cluster secret, refuses a quantity
    that is not positive with a 4xx (a definite answer: 5xx means "outcome unknown, retry")
    and changes nothing."""
    before = settled_snapshot(seeded)
    batch = {"sells": [value]}
    status, body = internal_post(seeded, catalog_primary_url(seeded), "/internal/sell", batch)
    assert 400 <= status < 500, (status, body)
    assert body["error"]["code"] == "invalid_request", body
    assert snapshot(seeded) == before


def test_a_purchase_without_a_trailing_slash_works(seeded: Cluster) -> None:
    """Defect 6 (a PUT without the trailing slash was a 500: APPEND_SLASH cannot redirect a
    PUT) and 9 (a GET without it cost a 301): the seed's own purchase request, with and
    without the slash, each buys one copy, with no redirect."""
    stock = settled_stocks(seeded, 1)
    for path in ("/purchase/1", "/purchase/1/"):
        reply = send(seeded, "PUT", path, b"item_number=1", FORM)
        assert reply.status == 200, reply
        assert "location" not in reply.headers
        assert reply.json["data"] == "Purchase done"
        assert (reply.json["order"]["book_id"], reply.json["order"]["quantity"]) == (1, 1)
    assert settled_stocks(seeded, 1) == stock - 2
    for path in ("/info/1", "/info/1/"):
        reply = send(seeded, "GET", path)
        assert reply.status == 200, reply
        assert reply.json["data"]["stock"] == stock - 2


# ---------------------------------------------------------------- 8: cache invalidation


def test_failed_purchases_do_not_invalidate_the_cache(seeded: Cluster) -> None:
    """Defect 8 (the whole cache was flushed after every purchase attempt, failed and
    zero-quantity ones included): a purchase that sells nothing (409 out of stock, 422 bad
    quantity, 404 unknown book, 415) invalidates nothing, and the cached entries are still
    hits; a purchase that sells does invalidate (the control)."""
    paths = ["/info/4", "/search/undergraduate"]
    warm = {}
    for path in paths:
        for _ in range(2):
            status, warm[path] = seeded.json("GET", path)
            assert status == 200, warm[path]
    stock = warm["/info/4"]["data"]["stock"]
    assert stock == 3
    before = cache_stats(seeded)
    failing = [
        ("/purchase/4", b'{"quantity": 4}', JSON, 409, "out_of_stock"),
        ("/purchase/4", b'{"quantity": 0}', JSON, 422, "invalid_request"),
        ("/purchase/4", b'{"item_number": -5}', JSON, 422, "invalid_request"),
        ("/purchase/4", b"item_number=0", FORM, 422, "invalid_request"),
        ("/purchase/4", b"1", "text/plain", 415, "unsupported_media_type"),
        ("/purchase/424242", None, None, 404, "not_found"),
    ]
    for path, body, content_type, status, code in failing:
        assert_error(send(seeded, "PUT", path, body, content_type), status, code)
        now = cache_stats(seeded)
        assert (now["invalidations"], now["entries"]) == (
            before["invalidations"],
            before["entries"],
        ), (path, body)
    for path in paths:
        assert seeded.json("GET", path) == (200, warm[path])
    after = cache_stats(seeded)
    assert (after["hits"], after["misses"]) == (before["hits"] + 2, before["misses"])

    reply = send(seeded, "PUT", "/purchase/4", b'{"quantity": 1}', JSON)
    assert reply.status == 200, reply
    assert cache_stats(seeded)["invalidations"] == before["invalidations"] + 1
    assert front_end_stock(seeded, 4) == stock - 1
    status, body = seeded.json("GET", "/search/undergraduate")
    assert (status, stock_in(body, 4)) == (200, stock - 1)


@pytest.mark.parametrize("write", ["update", "sell"])
def test_a_write_made_directly_to_the_catalog_primary_reaches_the_cache(
    seeded: Cluster, write: str
) -> None:
    """Defect 8 (the cache was invalidated only by purchases through the front end, so a
    write made directly to the catalog left it stale forever): an update or a sale sent to
    the catalog primary's internal API (with the cluster secret) is seen by the next read
    through the front end, from every cached resource that shows the book."""
    paths = ["/info/5", "/search/node.js", "/info"]
    for path in paths:
        for _ in range(2):  # the second read is a hit
            assert seeded.json("GET", path)[0] == 200
    stock = settled_stocks(seeded, 5)
    assert front_end_stock(seeded, 5) == stock
    primary = catalog_primary_url(seeded)
    if write == "update":
        status, body = internal_post(
            seeded, primary, "/internal/books/5", {"book_id": 5, "stock_delta": 5}
        )
        expected = stock + 5
    else:
        sale = {"idempotency_key": f"direct-{uuid.uuid4().hex}", "book_id": 5, "quantity": 2}
        status, body = internal_post(seeded, primary, "/internal/sell", {"sells": [sale]})
        assert status == 200, body
        body = body["outcomes"][0]["result"]
        expected = stock - 2
    assert status == 200, body
    assert body["status"] == "ok", body
    for _ in range(2):
        assert front_end_stock(seeded, 5) == expected
        status, found = seeded.json("GET", "/search/node.js")
        assert (status, stock_in(found, 5)) == (200, expected)
        status, listed = seeded.json("GET", "/info")
        assert (status, stock_in(listed, 5)) == (200, expected)
    assert settled_stocks(seeded, 5) == expected


# ---------------------------------------------------------------- 11: search


SEARCHES = [
    ("/search/a.b", [7]),
    ("/search/A.B/", [7]),
    ("/search/a%2Eb", [7]),
    ("/search/node.js", [5]),
    ("/search/NODE.JS", [5]),
    ("/search/...", []),
    ("/search/x.y", []),
    ("/search/%2E", [5, 7]),  # a topic that is one dot
    ("/search/%2E%2E", []),  # two dots: no topic holds them
    ("/search/100%25", [6]),
    ("/search/%25", [6]),
    ("/search/_", [6]),
    ("/search/pure_python", [6]),
    ("/search/1_0", []),  # `_` is not a wildcard (LIKE '%1_0%' matches "100")
    ("/search/0%25p", []),  # `%` is not a wildcard (LIKE '%0%p%' matches "100% Pure")
    ("/search/a_b", []),  # would match "a.b" and "axb" as a LIKE pattern
]


@pytest.mark.parametrize(("path", "ids"), SEARCHES, ids=[case[0] for case in SEARCHES])
def test_topics_with_dots_and_wildcards_are_searched_literally(
    seeded: Cluster, path: str, ids: list[int]
) -> None:
    """Defect 11 (topics containing `.` were unreachable: the router's pk regex refused
    them; `/search/a.b/` was a 404): a topic holding `.` (here "a.b" and "Node.js", from the
    catalog file) is found by any substring, the dot included, and `.`, `%` and `_` match
    only themselves. Twice: the second answer comes from the cache."""
    for _ in range(2):
        reply = send(seeded, "GET", path)
        assert reply.status == 200, reply
        assert [book["id"] for book in reply.json["data"]] == ids
