"""The public API of docs/contract.md §2 and §8 against a real 2+2 cluster: every route, its
success bodies and its failures (status and error code), trailing slashes, `X-Request-Id`, 405 with
`Allow`, idempotency, paging, the admin route, the internal routes' secret, binding and the
secret files. Malformed requests in bulk (and proof that they change nothing) are in
`test_bad_input.py`.

Tests share one module-scoped cluster; none relies on stock another test left: each sets the
stock it needs (`set_stock`) and uses fresh idempotency keys. Bookkeeping reads (stock before
and after) go to the catalog primary with the cluster secret; reads through the front end
right after writes are checked on their own (`test_reads_after_acknowledged_writes_...`).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import stat
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from bazar.frontend import pages
from bazar.testing.cluster import Cluster, wait_until
from bazar.testing.probe import (
    Reply,
    assert_error,
    raw_request,
    settled_snapshot,
    snapshot,
)

JSON_TYPE = {"Content-Type": "application/json"}
BOOK_KEYS = {"id", "title", "topic", "stock", "cost"}
ORDER_KEYS = {"id", "book_id", "quantity", "unit_cost", "total_cost", "status", "created_at"}
BODY_MAX = 64 * 1024
INITIAL = {
    1: ("How to get a good grade in DOS in 40 minutes a day", "Distributed Systems", 10),
    2: ("RPCs for Noobs", "Distributed Systems", 15),
    3: ("Xen and the Art of Surviving Undergraduate School", "Undergraduate School", 12),
    4: ("Cooking for the Impatient Undergrad", "Undergraduate School", 20),
    5: ("How to finish Project 3 on time", "Distributed Systems", 25),
    6: ("Why theory classes are so hard", "Undergraduate School", 18),
    7: ("Spring in the Pioneer Valley", "Undergraduate School", 30),
}
DISTRIBUTED = [1, 2, 5]
UNDERGRADUATE = [3, 4, 6, 7]


# ---------------------------------------------------------------- helpers


def call(
    cluster: Cluster,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request through urllib (which adds a form Content-Type to a body without one)."""
    status, reply_headers, raw = cluster.request(method, path, body=body, headers=headers)
    assert status != 0, f"nothing answered {method} {path}"
    return Reply(status, reply_headers, raw)


def send_json(
    cluster: Cluster, method: str, path: str, value: object, headers: dict[str, str] | None = None
) -> Reply:
    return call(
        cluster,
        method,
        path,
        body=json.dumps(value).encode(),
        headers={**JSON_TYPE, **(headers or {})},
    )


def assert_book_shape(book: Any) -> None:
    assert isinstance(book, dict), book
    assert set(book) == BOOK_KEYS, book
    assert isinstance(book["id"], int)
    assert not isinstance(book["id"], bool)
    assert isinstance(book["title"], str)
    assert isinstance(book["topic"], str)
    assert isinstance(book["stock"], int)
    assert not isinstance(book["stock"], bool)
    assert book["stock"] >= 0
    assert isinstance(book["cost"], int | float)
    assert not isinstance(book["cost"], bool)


def assert_order_shape(order: Any) -> None:
    assert isinstance(order, dict), order
    assert set(order) == ORDER_KEYS, order
    assert isinstance(order["id"], str)
    assert order["id"]
    assert isinstance(order["book_id"], int)
    assert isinstance(order["quantity"], int)
    assert order["quantity"] >= 1
    assert order["status"] == "completed"
    assert order["total_cost"] == pytest.approx(order["unit_cost"] * order["quantity"])
    created = order["created_at"]
    assert isinstance(created, str), created
    assert created.endswith("Z"), created
    parsed = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
    assert parsed.utcoffset() == datetime.timedelta(0)


def admin(cluster: Cluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.admin_token}"}


def book_of(cluster: Cluster, book_id: int) -> dict[str, Any]:
    """The book as the catalog primary has committed it (internal read with the secret).

    Bookkeeping reads go to the primary so that a test checks its own subject; reads through
    the front end right after a write are the subject of
    `test_reads_after_acknowledged_writes_are_never_stale`.
    """
    primary = cluster.cluster_info()["catalog"]["primary"]
    status, body = cluster.internal(
        "GET", cluster.replica_urls("catalog")[primary], f"/books/{book_id}"
    )
    assert status == 200, body
    book: dict[str, Any] = body["data"]
    return book


def stock_of(cluster: Cluster, book_id: int) -> int:
    stock: int = book_of(cluster, book_id)["stock"]
    return stock


def set_stock(cluster: Cluster, book_id: int, stock: int) -> None:
    delta = stock - stock_of(cluster, book_id)
    if delta:
        assert cluster.restock(book_id, delta)["stock"] == stock
    assert stock_of(cluster, book_id) == stock


def patch(
    cluster: Cluster, book_id: int, value: object, token: bool = True, key: str | None = None
) -> Reply:
    headers = admin(cluster) if token else {}
    if key is not None:
        headers["Idempotency-Key"] = key
    return send_json(cluster, "PATCH", f"/books/{book_id}", value, headers)


def buy(
    cluster: Cluster,
    book_id: int,
    quantity: int | None = None,
    *,
    key: str | None = None,
    method: str = "PUT",
) -> Reply:
    headers = {"Idempotency-Key": key} if key is not None else {}
    if quantity is None:
        return call(cluster, method, f"/purchase/{book_id}", headers=headers)
    return send_json(cluster, method, f"/purchase/{book_id}", {"quantity": quantity}, headers)


def new_key() -> str:
    return f"test-{uuid.uuid4().hex}"


def all_orders(cluster: Cluster) -> list[dict[str, Any]]:
    reply = call(cluster, "GET", "/orders?limit=1000")
    assert reply.status == 200, reply
    assert reply.json["next"] is None, "more than 1000 orders in one test module"
    orders: list[dict[str, Any]] = reply.json["data"]
    return orders


# ---------------------------------------------------------------- search


@pytest.mark.parametrize(
    ("topic", "ids"),
    [
        ("Distributed Systems", DISTRIBUTED),
        ("distributed systems", DISTRIBUTED),
        ("DISTRIBUTED", DISTRIBUTED),
        ("tEmS", DISTRIBUTED),
        ("undergraduate school", UNDERGRADUATE),
        ("SCHOOL", UNDERGRADUATE),
        ("s", [1, 2, 3, 4, 5, 6, 7]),
    ],
    ids=lambda value: str(value).replace(" ", "_"),
)
def test_search_matches_topic_case_insensitively_ordered_by_id(
    cluster: Cluster, topic: str, ids: list[int]
) -> None:
    reply = call(cluster, "GET", "/search/" + quote(topic, safe=""))
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith("application/json")
    assert set(reply.json) == {"data"}
    books = reply.json["data"]
    for book in books:
        assert_book_shape(book)
        assert (book["title"], book["topic"]) == INITIAL[book["id"]][:2]
        assert topic.casefold() in book["topic"].casefold()
    assert [book["id"] for book in books] == ids


@pytest.mark.parametrize(
    "path",
    [
        "/search/cooking",  # a word of a title, not of a topic
        "/search/Distributed+Systems",  # '+' is a literal plus in a path, not a space
        "/search/%C3%A9t%C3%A9",
        "/search/" + "a" * 200,  # the longest topic
        "/search/" + "%C3%A9" * 200,  # 200 characters, 400 bytes
    ],
    ids=["title-word", "plus-is-literal", "non-ascii", "200-chars", "200-non-ascii-chars"],
)
def test_search_without_match_is_empty_list(cluster: Cluster, path: str) -> None:
    reply = call(cluster, "GET", path)
    assert reply.status == 200, reply
    assert reply.json == {"data": []}


def test_search_url_encoded_topic_equals_plain(cluster: Cluster) -> None:
    encoded = call(cluster, "GET", "/search/Undergraduate%20School")
    assert encoded.status == 200
    assert [book["id"] for book in encoded.json["data"]] == UNDERGRADUATE
    assert call(cluster, "GET", "/search/%55ndergraduate%20%53chool").json == encoded.json


@pytest.mark.parametrize(
    "path",
    [
        "/search",
        "/search/",
        "/search/%20",
        "/search/%20%20%09",
        "/search/" + "a" * 201,
        "/search/" + "%C3%A9" * 201,
    ],
    ids=["no-topic", "no-topic-slash", "blank", "whitespace", "201-chars", "201-non-ascii"],
)
def test_search_bad_topic_is_422(cluster: Cluster, path: str) -> None:
    assert_error(call(cluster, "GET", path), 422, "invalid_request")


# ---------------------------------------------------------------- info


@pytest.mark.parametrize("book_id", sorted(INITIAL))
def test_info_returns_the_book(cluster: Cluster, book_id: int) -> None:
    reply = call(cluster, "GET", f"/info/{book_id}")
    assert reply.status == 200, reply
    assert set(reply.json) == {"data"}
    book = reply.json["data"]
    assert_book_shape(book)
    assert book["id"] == book_id
    assert (book["title"], book["topic"]) == INITIAL[book_id][:2]


def test_info_leading_zero_is_the_same_id(cluster: Cluster) -> None:
    settled_snapshot(cluster)
    assert call(cluster, "GET", "/info/01").json == call(cluster, "GET", "/info/1").json
    assert call(cluster, "GET", "/info/0007").json["data"]["id"] == 7


@pytest.mark.parametrize("book_id", ["8", "999999", str(2**63 - 1)], ids=["8", "999999", "max"])
def test_info_unknown_book_is_404(cluster: Cluster, book_id: str) -> None:
    assert_error(call(cluster, "GET", f"/info/{book_id}"), 404, "not_found")


@pytest.mark.parametrize(
    "book_id",
    [
        "abc",
        "0",
        "00",
        "-1",
        str(2**63),
        "99999999999999999999999999",
        "%D9%A1",  # ARABIC-INDIC DIGIT ONE
        "%EF%BC%91",  # FULLWIDTH DIGIT ONE
        "+1",
        "%2B1",
        "%201",
        "1%20",
        "1.0",
        "1e3",
        "0x1",
    ],
    ids=[
        "letters",
        "zero",
        "zeros",
        "negative",
        "2^63",
        "huge",
        "arabic-digit",
        "fullwidth-digit",
        "plus",
        "plus-encoded",
        "leading-space",
        "trailing-space",
        "decimal",
        "exponent",
        "hex",
    ],
)
def test_info_bad_id_is_422(cluster: Cluster, book_id: str) -> None:
    assert_error(call(cluster, "GET", f"/info/{book_id}"), 422, "invalid_request")


def test_info_lists_all_books_by_id(cluster: Cluster) -> None:
    settled_snapshot(cluster)
    reply = call(cluster, "GET", "/info")
    assert reply.status == 200, reply
    assert set(reply.json) == {"data"}
    books = reply.json["data"]
    for book in books:
        assert_book_shape(book)
        assert (book["title"], book["topic"]) == INITIAL[book["id"]][:2]
    assert [book["id"] for book in books] == sorted(INITIAL)
    assert books == [book_of(cluster, book_id) for book_id in sorted(INITIAL)]


# ---------------------------------------------------------------- purchase


@pytest.mark.parametrize("method", ["PUT", "POST"])
def test_purchase_without_body_buys_one(cluster: Cluster, method: str) -> None:
    set_stock(cluster, 1, 5)
    cost = book_of(cluster, 1)["cost"]
    reply = call(cluster, method, "/purchase/1")
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith("application/json")
    assert "idempotent-replayed" not in reply.headers
    body = reply.json
    assert set(body) == {"data", "order"}
    assert body["data"] == "Purchase done"
    order = body["order"]
    assert_order_shape(order)
    assert (order["book_id"], order["quantity"]) == (1, 1)
    assert order["unit_cost"] == cost
    assert order["total_cost"] == cost
    assert stock_of(cluster, 1) == 4
    assert call(cluster, "GET", f"/orders/{order['id']}").json == {"data": order}


@pytest.mark.parametrize(
    ("content_type", "body", "quantity"),
    [
        ("application/json", b"", 1),
        ("application/x-www-form-urlencoded", b"", 1),
        ("text/plain", b"", 1),
        ("application/json", b"{}", 1),
        ("application/json", b'{"quantity": 2}', 2),
        ("application/json", b'{"item_number": 3}', 3),
        ("application/json; charset=utf-8", b'{"quantity": 2}', 2),
        ("Application/JSON", b' {"item_number" : 2} ', 2),
        ("application/x-www-form-urlencoded", b"item_number=2", 2),
        ("application/x-www-form-urlencoded; charset=utf-8", b"item_number=4", 4),
        ("application/json", b'{"quantity": 1000}', 1000),
    ],
    ids=[
        "empty-json",
        "empty-form",
        "empty-text-plain",
        "json-empty-object",
        "json-quantity",
        "json-item-number",
        "json-charset",
        "json-case-and-spaces",
        "form-item-number",
        "form-charset",
        "json-quantity-max",
    ],
)
def test_purchase_body_gives_the_quantity(
    cluster: Cluster, content_type: str, body: bytes, quantity: int
) -> None:
    set_stock(cluster, 2, 1000)
    reply = call(cluster, "POST", "/purchase/2", body=body, headers={"Content-Type": content_type})
    assert reply.status == 200, reply
    assert reply.json["data"] == "Purchase done"
    order = reply.json["order"]
    assert_order_shape(order)
    assert (order["book_id"], order["quantity"]) == (2, quantity)
    assert stock_of(cluster, 2) == 1000 - quantity


def test_purchase_body_at_64_kib_is_accepted_and_above_is_413(cluster: Cluster) -> None:
    set_stock(cluster, 1, 5)
    exact = b'{"quantity": 1}'.ljust(BODY_MAX, b" ")
    assert len(exact) == BODY_MAX
    for chunked in (False, True):
        reply = raw_request(
            cluster.url, "PUT", "/purchase/1", list(JSON_TYPE.items()), exact, chunked=chunked
        )
        assert reply.status == 200, reply
    assert stock_of(cluster, 1) == 3
    for chunked in (False, True):
        reply = raw_request(
            cluster.url,
            "PUT",
            "/purchase/1",
            list(JSON_TYPE.items()),
            exact + b" ",
            chunked=chunked,
        )
        assert_error(reply, 413, "payload_too_large")
    assert stock_of(cluster, 1) == 3


def test_purchase_of_unknown_book_is_404_and_stores_nothing(cluster: Cluster) -> None:
    before = settled_snapshot(cluster)
    key = new_key()
    assert_error(buy(cluster, 999, key=key), 404, "not_found")
    assert_error(buy(cluster, 999, key=key), 404, "not_found")
    assert snapshot(cluster) == before
    # A 404 stores nothing under its key: the key is still free for a real purchase.
    set_stock(cluster, 1, 5)
    reply = buy(cluster, 1, key=key)
    assert reply.status == 200, reply
    assert "idempotent-replayed" not in reply.headers


def test_purchase_beyond_stock_is_409_and_stock_unchanged(cluster: Cluster) -> None:
    set_stock(cluster, 3, 4)
    orders = all_orders(cluster)
    assert_error(buy(cluster, 3, 5), 409, "out_of_stock")
    assert stock_of(cluster, 3) == 4
    assert all_orders(cluster) == orders
    assert buy(cluster, 3, 4).status == 200
    assert stock_of(cluster, 3) == 0
    assert_error(buy(cluster, 3), 409, "out_of_stock")
    assert stock_of(cluster, 3) == 0


@pytest.mark.parametrize("second_method", ["PUT", "POST"])
def test_idempotency_key_replays_the_first_answer(cluster: Cluster, second_method: str) -> None:
    set_stock(cluster, 5, 10)
    key = new_key()
    first = buy(cluster, 5, 2, key=key)
    assert first.status == 200, first
    assert "idempotent-replayed" not in first.headers
    for _ in range(2):
        again = buy(cluster, 5, 2, key=key, method=second_method)
        assert again.status == 200, again
        assert again.headers.get("idempotent-replayed") == "true"
        assert again.json == first.json
    # item_number is a synonym of quantity: the same purchase, so a replay too.
    synonym = send_json(cluster, "PUT", "/purchase/5", {"item_number": 2}, {"Idempotency-Key": key})
    assert synonym.status == 200
    assert synonym.json["order"]["id"] == first.json["order"]["id"]
    assert synonym.headers.get("idempotent-replayed") == "true"
    assert stock_of(cluster, 5) == 8
    ids = [order["id"] for order in all_orders(cluster)]
    assert ids.count(first.json["order"]["id"]) == 1


def test_idempotency_key_with_other_purchase_is_422_reused(cluster: Cluster) -> None:
    set_stock(cluster, 5, 10)
    set_stock(cluster, 6, 10)
    key = new_key()
    first = buy(cluster, 5, 1, key=key)
    assert first.status == 200, first
    orders = all_orders(cluster)
    assert_error(buy(cluster, 5, 2, key=key), 422, "idempotency_key_reused")
    assert_error(buy(cluster, 6, 1, key=key), 422, "idempotency_key_reused")
    assert_error(buy(cluster, 6, key=key), 422, "idempotency_key_reused")
    assert (stock_of(cluster, 5), stock_of(cluster, 6)) == (9, 10)
    assert all_orders(cluster) == orders
    assert buy(cluster, 5, 1, key=key).json == first.json


def test_out_of_stock_key_stays_409_after_restock(cluster: Cluster) -> None:
    set_stock(cluster, 4, 0)
    key = new_key()
    first = buy(cluster, 4, 1, key=key)
    assert_error(first, 409, "out_of_stock")
    assert "idempotent-replayed" not in first.headers
    cluster.restock(4, 5)
    again = buy(cluster, 4, 1, key=key)
    assert_error(again, 409, "out_of_stock")
    assert again.headers.get("idempotent-replayed") == "true"
    assert stock_of(cluster, 4) == 5
    # The restock is real: a purchase under another key succeeds.
    assert buy(cluster, 4, 1, key=new_key()).status == 200
    assert stock_of(cluster, 4) == 4


def test_request_rejected_by_validation_stores_nothing_under_its_key(cluster: Cluster) -> None:
    set_stock(cluster, 5, 10)
    key = new_key()
    assert_error(buy(cluster, 5, 0, key=key), 422, "invalid_request")
    reply = send_json(cluster, "PUT", "/purchase/5", {"quantity": "1"}, {"Idempotency-Key": key})
    assert_error(reply, 422, "invalid_request")
    assert stock_of(cluster, 5) == 10
    first = buy(cluster, 5, 3, key=key)
    assert first.status == 200, first
    assert "idempotent-replayed" not in first.headers
    assert stock_of(cluster, 5) == 7


def test_idempotency_key_of_255_printable_ascii_is_accepted(cluster: Cluster) -> None:
    set_stock(cluster, 5, 10)
    key = ("~ !" + uuid.uuid4().hex).ljust(255, "k")
    first = buy(cluster, 5, key=key)
    assert first.status == 200, first
    again = buy(cluster, 5, key=key)
    assert again.json == first.json
    assert again.headers.get("idempotent-replayed") == "true"
    assert stock_of(cluster, 5) == 9


def test_reads_after_acknowledged_writes_are_never_stale(cluster: Cluster) -> None:
    """docs/contract.md §3.2: once a restock or purchase is acknowledged, no later read through
    the front end returns the older value. Reads alternate over both catalog replicas (round
    robin), so each write is followed by reads from the primary and from the backup."""
    set_stock(cluster, 2, 500)
    expected = 500
    stale: list[tuple[int, str, int, int]] = []
    for step in range(300):
        if step % 3 == 2:
            reply = buy(cluster, 2)
            assert reply.status == 200, reply
            expected -= 1
            what = "purchase"
        else:
            delta = 1 if step % 3 == 0 else -1
            assert cluster.restock(2, delta)["stock"] == expected + delta
            expected += delta
            what = "restock"
        for _ in range(2):
            read = call(cluster, "GET", "/info/2")
            assert read.status == 200, read
            if read.json["data"]["stock"] != expected:
                stale.append((step, what, expected, read.json["data"]["stock"]))
        listed = call(cluster, "GET", "/info").json["data"]
        if listed[1]["stock"] != expected:
            stale.append((step, what + " (list)", expected, listed[1]["stock"]))
    assert not stale, f"stale reads (step, write, expected, read): {stale}"


# ---------------------------------------------------------------- orders


def test_order_by_id(cluster: Cluster) -> None:
    set_stock(cluster, 6, 10)
    order = buy(cluster, 6, 2).json["order"]
    for path in (f"/orders/{order['id']}", f"/orders/{order['id']}/"):
        reply = call(cluster, "GET", path)
        assert reply.status == 200, reply
        assert reply.json == {"data": order}


@pytest.mark.parametrize(
    "order_id",
    ["0" * 32, uuid.uuid4().hex, "not-an-order", "%20", "a" * 65, "%C3%A9", "%00", "1;drop"],
    ids=["zeros", "unknown-hex", "dashes", "space", "too-long", "non-ascii", "nul", "semicolon"],
)
def test_unknown_or_malformed_order_id_is_404(cluster: Cluster, order_id: str) -> None:
    assert_error(call(cluster, "GET", f"/orders/{order_id}"), 404, "not_found")


def test_orders_page_oldest_first_without_empty_last_page(cluster: Cluster) -> None:
    set_stock(cluster, 7, 10)
    made = [buy(cluster, 7, quantity).json["order"] for quantity in (1, 2, 3)]
    orders = all_orders(cluster)
    assert len(orders) >= 3
    for order in orders:
        assert_order_shape(order)
    assert orders[-3:] == made, "newest last, in commit order"
    assert len({order["id"] for order in orders}) == len(orders)
    default = call(cluster, "GET", "/orders")
    assert default.status == 200
    assert set(default.json) == {"data", "next"}
    assert default.json["data"] == orders[:100]
    count = len(orders)
    for limit in sorted({1, 2, 3, max(1, count - 1), count, count + 1}):
        pages: list[list[dict[str, Any]]] = []
        after: str | None = None
        while True:
            path = f"/orders?limit={limit}" + (f"&after={after}" if after else "")
            reply = call(cluster, "GET", path)
            assert reply.status == 200, reply
            page, after = reply.json["data"], reply.json["next"]
            assert page, f"an empty page at limit={limit}"
            pages.append(page)
            if after is None:
                break
            assert len(page) == limit
            assert after == page[-1]["id"]
            assert len(pages) <= count
        assert [order for page in pages for order in page] == orders, f"limit={limit}"
        assert len(pages) == -(-count // limit)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=-1",
        "limit=",
        "limit=1.5",
        "limit=%D9%A1",
        "after=nope",
        "after=",
        f"after={uuid.uuid4().hex}",
        "limit=5&after=nope",
    ],
    ids=lambda query: query.replace("%", "pct"),
)
def test_bad_paging_is_422(cluster: Cluster, query: str) -> None:
    assert_error(call(cluster, "GET", f"/orders?{query}"), 422, "invalid_request")


def test_paging_limit_bounds_are_accepted(cluster: Cluster) -> None:
    for limit in (1, 1000):
        reply = call(cluster, "GET", f"/orders?limit={limit}")
        assert reply.status == 200, reply
        assert len(reply.json["data"]) <= limit


# ---------------------------------------------------------------- PATCH /books (admin)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Bearer", "Basic {admin}", "{admin}", "Bearer {secret}"],
    ids=["none", "wrong", "empty-bearer", "basic-scheme", "no-scheme", "cluster-secret"],
)
def test_patch_without_admin_token_is_401(cluster: Cluster, authorization: str | None) -> None:
    before = book_of(cluster, 6)
    headers = dict(JSON_TYPE)
    if authorization is not None:
        headers["Authorization"] = authorization.format(
            admin=cluster.admin_token, secret=cluster.secret
        )
    reply = call(cluster, "PATCH", "/books/6", body=b'{"stock_delta": 5}', headers=headers)
    assert_error(reply, 401, "unauthorized")
    assert book_of(cluster, 6) == before


def test_patch_cost_and_stock(cluster: Cluster) -> None:
    set_stock(cluster, 6, 10)
    original = book_of(cluster, 6)["cost"]
    try:
        reply = patch(cluster, 6, {"cost": 18.25})
        assert reply.status == 200, reply
        assert set(reply.json) == {"data"}
        assert_book_shape(reply.json["data"])
        assert reply.json["data"]["cost"] == 18.25
        assert book_of(cluster, 6) == reply.json["data"]
        reply = patch(cluster, 6, {"stock_delta": 3})
        assert reply.status == 200, reply
        assert reply.json["data"]["stock"] == 13
        assert reply.json["data"]["cost"] == 18.25
        reply = patch(cluster, 6, {"cost": 7, "stock_delta": -5})
        assert reply.status == 200, reply
        assert (reply.json["data"]["cost"], reply.json["data"]["stock"]) == (7, 8)
        assert patch(cluster, 6, {"cost": 12.30}).json["data"]["cost"] == 12.3
        assert patch(cluster, 6, {"cost": 0}).json["data"]["cost"] == 0
        assert book_of(cluster, 6) == {**reply.json["data"], "cost": 0}
        # The new cost is what a purchase charges.
        order = buy(cluster, 6, 2).json["order"]
        assert (order["unit_cost"], order["total_cost"]) == (0, 0)
    finally:
        assert patch(cluster, 6, {"cost": original}).status == 200
    assert book_of(cluster, 6)["cost"] == original


def test_patch_stock_delta_zero_changes_nothing(cluster: Cluster) -> None:
    before_book = book_of(cluster, 7)
    before = settled_snapshot(cluster)
    reply = patch(cluster, 7, {"stock_delta": 0})
    assert reply.status == 200, reply
    assert reply.json == {"data": before_book}
    assert settled_snapshot(cluster) == before


def test_patch_stock_delta_bounds(cluster: Cluster) -> None:
    set_stock(cluster, 7, 10)
    assert patch(cluster, 7, {"stock_delta": 10**9}).json["data"]["stock"] == 10**9 + 10
    assert patch(cluster, 7, {"stock_delta": -(10**9)}).json["data"]["stock"] == 10
    for delta in (10**9 + 1, -(10**9) - 1):
        assert_error(patch(cluster, 7, {"stock_delta": delta}), 422, "invalid_request")
    assert stock_of(cluster, 7) == 10


def test_patch_cost_bounds(cluster: Cluster) -> None:
    """The largest cost is the documented maximum (found by schemathesis: a cost of
    47835249736718.42 was schema-valid and refused)."""
    original = book_of(cluster, 7)["cost"]
    try:
        assert patch(cluster, 7, {"cost": 10**13}).json["data"]["cost"] == 10**13
        assert (
            patch(cluster, 7, {"cost": 9999999999999.99}).json["data"]["cost"] == 9999999999999.99
        )
        for cost in (10**13 + 0.01, 10**13 + 1, 47835249736718.42):
            assert_error(patch(cluster, 7, {"cost": cost}), 422, "invalid_request")
    finally:
        assert patch(cluster, 7, {"cost": original}).status == 200
    assert book_of(cluster, 7)["cost"] == original


def test_patch_below_zero_is_409_and_stock_unchanged(cluster: Cluster) -> None:
    set_stock(cluster, 7, 2)
    assert_error(patch(cluster, 7, {"stock_delta": -3}), 409, "out_of_stock")
    assert_error(patch(cluster, 7, {"cost": 1, "stock_delta": -3}), 409, "out_of_stock")
    assert book_of(cluster, 7)["stock"] == 2
    assert book_of(cluster, 7)["cost"] == INITIAL[7][2]
    assert patch(cluster, 7, {"stock_delta": -2}).json["data"]["stock"] == 0


def test_patch_unknown_book_is_404(cluster: Cluster) -> None:
    assert_error(patch(cluster, 999, {"stock_delta": 1}), 404, "not_found")
    assert_error(patch(cluster, 0, {"stock_delta": 1}), 422, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"cost": -1},
        {"cost": -0.01},
        {"cost": 1.234},
        {"cost": 0.001},
        {"cost": "10"},
        {"cost": None},
        {"cost": True},
        {"stock_delta": 1.5},
        {"stock_delta": "5"},
        {"stock_delta": True},
        {"stock_delta": None},
        {"stock_delta": 10**9 + 1},
        {"stock_delta": -(10**9) - 1},
        {"stock_delta": 1, "title": "x"},
        {"price": 10},
        [],
        None,
        "cost",
    ],
    ids=lambda body: json.dumps(body),
)
def test_patch_bad_body_is_422(cluster: Cluster, body: object) -> None:
    before = book_of(cluster, 6)
    assert_error(patch(cluster, 6, body), 422, "invalid_request")
    assert book_of(cluster, 6) == before


def test_patch_idempotency_key_replays_the_first_answer(cluster: Cluster) -> None:
    """An update is executed at most once per key: a retry gets the first answer (the
    stock it left then), marked replayed, and changes nothing."""
    set_stock(cluster, 7, 2)
    key = new_key()
    first = patch(cluster, 7, {"stock_delta": 3}, key=key)
    assert first.status == 200, first
    assert first.headers.get("idempotency-key") == key
    assert "idempotent-replayed" not in first.headers
    assert buy(cluster, 7, 1).status == 200
    again = patch(cluster, 7, {"stock_delta": 3}, key=key)
    assert again.status == 200, again
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json == first.json
    assert stock_of(cluster, 7) == 4


def test_patch_without_key_runs_under_a_key_of_its_own(cluster: Cluster) -> None:
    set_stock(cluster, 7, 2)
    keys = set()
    for stock in (3, 4):
        reply = patch(cluster, 7, {"stock_delta": 1})
        assert reply.json["data"]["stock"] == stock, reply
        assert re.fullmatch("[0-9a-f]{32}", reply.headers["idempotency-key"]), reply.headers
        keys.add(reply.headers["idempotency-key"])
    assert len(keys) == 2
    refused = patch(cluster, 7, {"stock_delta": -5})
    assert_error(refused, 409, "out_of_stock")
    assert "idempotency-key" in refused.headers  # a 409 or a 503 can be retried under it


def test_patch_out_of_stock_key_stays_409_after_restock(cluster: Cluster) -> None:
    set_stock(cluster, 7, 2)
    key = new_key()
    assert_error(patch(cluster, 7, {"stock_delta": -3}, key=key), 409, "out_of_stock")
    cluster.restock(7, 5)
    again = patch(cluster, 7, {"stock_delta": -3}, key=key)
    assert_error(again, 409, "out_of_stock")
    assert again.headers.get("idempotent-replayed") == "true"
    assert stock_of(cluster, 7) == 7


def test_patch_key_of_another_request_is_422_reused(cluster: Cluster) -> None:
    """A key names one request: another update, or a purchase, under an update's key is
    refused, and so is an update under a purchase's key; none changes anything."""
    set_stock(cluster, 6, 10)
    set_stock(cluster, 7, 10)
    key, bought = new_key(), new_key()
    assert patch(cluster, 7, {"stock_delta": 1}, key=key).status == 200
    assert buy(cluster, 6, 1, key=bought).status == 200
    orders = all_orders(cluster)
    for reply in (
        patch(cluster, 7, {"stock_delta": 2}, key=key),
        patch(cluster, 6, {"stock_delta": 1}, key=key),
        patch(cluster, 7, {"stock_delta": 1, "cost": 1}, key=key),
        patch(cluster, 6, {"stock_delta": 1}, key=bought),
        buy(cluster, 7, 1, key=key),
    ):
        assert_error(reply, 422, "idempotency_key_reused")
    assert (stock_of(cluster, 6), stock_of(cluster, 7)) == (9, 11)
    assert book_of(cluster, 7)["cost"] == INITIAL[7][2]
    assert all_orders(cluster) == orders


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "application/x-www-form-urlencoded"}, {"Content-Type": "text/plain"}, {}],
    ids=["form", "text-plain", "no-content-type"],
)
def test_patch_takes_json_only(cluster: Cluster, headers: dict[str, str]) -> None:
    before = book_of(cluster, 6)
    reply = raw_request(
        cluster.url,
        "PATCH",
        "/books/6",
        [*headers.items(), *admin(cluster).items()],
        b"stock_delta=1",
    )
    assert_error(reply, 415, "unsupported_media_type")
    assert book_of(cluster, 6) == before


# ---------------------------------------------------------------- operations and pages


def test_health(cluster: Cluster) -> None:
    reply = call(cluster, "GET", "/health")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json == {"data": {"status": "ok"}}


def test_cluster_shape(cluster: Cluster) -> None:
    reply = call(cluster, "GET", "/cluster")
    assert reply.status == 200
    assert set(reply.json) == {"data"}
    info = reply.json["data"]
    assert {"catalog", "order", "cache"} <= set(info)
    for tier in ("catalog", "order"):
        view = info[tier]
        assert {"epoch", "primary", "replicas"} <= set(view)
        assert isinstance(view["epoch"], int)
        assert view["epoch"] >= 1
        replicas = view["replicas"]
        assert [replica["name"] for replica in replicas] == [f"{tier}-1", f"{tier}-2"]
        assert view["primary"] in {replica["name"] for replica in replicas}
        for replica in replicas:
            assert {
                "name",
                "url",
                "role",
                "state",
                "pid",
                "last_seq",
                "commit_seq",
            } <= set(replica)
            assert replica["role"] == (
                "primary" if replica["name"] == view["primary"] else "backup"
            )
            assert replica["state"] in {"in_sync", "catching_up", "down"}
            assert replica["url"].startswith("http://")
            for field in ("pid", "last_seq", "commit_seq"):
                assert isinstance(replica[field], int), replica
                assert replica[field] >= 0, replica
        assert len({replica["pid"] for replica in replicas}) == 2
        assert len({replica["url"] for replica in replicas}) == 2
    cache = info["cache"]
    assert {"entries", "hits", "misses", "invalidations"} <= set(cache)
    for field in ("entries", "hits", "misses", "invalidations"):
        assert isinstance(cache[field], int)
        assert cache[field] >= 0


def test_cluster_view_at_first_start_is_epoch_1(fresh_cluster: Cluster) -> None:
    """The view at first start is epoch 1, with the first replica of each tier as primary,
    and both replicas come (or already are) in sync."""

    def both_in_sync() -> bool:
        info = fresh_cluster.cluster_info()
        return all(
            [replica["state"] for replica in info[tier]["replicas"]] == ["in_sync", "in_sync"]
            for tier in ("catalog", "order")
        )

    wait_until(both_in_sync, 10.0, "both replicas of each tier in sync")
    info = fresh_cluster.cluster_info()
    for tier in ("catalog", "order"):
        assert info[tier]["epoch"] == 1, info[tier]
        assert info[tier]["primary"] == f"{tier}-1", info[tier]
        roles = [replica["role"] for replica in info[tier]["replicas"]]
        assert roles == ["primary", "backup"], info[tier]


def test_metrics_is_prometheus_text(cluster: Cluster) -> None:
    call(cluster, "GET", "/info/1")
    reply = call(cluster, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.raw.decode()
    assert "# TYPE " in text
    assert "# HELP " in text
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert samples
    for line in samples:
        name, _, value = line.rpartition(" ")
        assert name
        float(value)


def test_openapi_document(cluster: Cluster) -> None:
    reply = call(cluster, "GET", "/openapi.json")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    document = reply.json
    assert str(document["openapi"]).startswith("3.1")
    assert "data" not in document
    for path in ("/search/{topic}", "/info/{id}", "/info", "/purchase/{id}", "/orders"):
        assert path in document["paths"], path
    assert {"put", "post"} <= set(document["paths"]["/purchase/{id}"])
    assert "patch" in document["paths"]["/books/{id}"]


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_html_pages(cluster: Cluster, path: str) -> None:
    reply = call(cluster, "GET", path)
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/html")
    page = reply.raw.decode().lower()
    assert "<html" in page
    # Works offline: nothing is loaded from another host.
    assert 'src="http' not in page
    assert "src='http" not in page
    assert "<link" not in page or 'href="http' not in page


def test_docs_page_is_swagger_ui_served_by_the_front_end(cluster: Cluster) -> None:
    """/docs loads the vendored Swagger UI from this front end, pointed at /openapi.json;
    each file it names is served with its type and a long cache lifetime, byte for byte."""
    page = call(cluster, "GET", "/docs").raw.decode()
    assert '"/openapi.json"' in page
    assert "SwaggerUIBundle(" in page
    urls = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert [url for url in urls if "://" in url or url.startswith("//")] == []
    bundle = [url for url in urls if "/swagger-ui-bundle.js?" in url]
    assert len(bundle) == 1, urls
    vendored = pages.static_root() / "swagger-ui"
    expected_types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    files = [url for url in urls if url.startswith("/static/")]
    assert len(files) >= 3, files
    for url in files:
        reply = call(cluster, "GET", url)
        assert reply.status == 200, url
        path = urlsplit(url).path
        assert reply.headers["content-type"].startswith(expected_types[Path(path).suffix]), url
        assert "max-age=31536000" in reply.headers["cache-control"], url
        assert reply.raw == (vendored / Path(path).name).read_bytes(), url


@pytest.mark.parametrize(
    "path",
    [
        "/static/swagger-ui/nope.js",
        "/static/swagger-ui/README.md",
        "/static/swagger-ui/LICENSE",
        "/static/docs.html",
        "/static/swagger-ui/..%2F..%2Fconfig.py",
        "/static/../pyproject.toml",
        "/static",
    ],
    ids=lambda path: path.removeprefix("/static").strip("/").replace("/", "-") or "root",
)
def test_static_serves_only_vendored_assets(cluster: Cluster, path: str) -> None:
    assert_error(raw_request(cluster.url, "GET", path), 404, "not_found")


# ---------------------------------------------------------------- slash, request id, 405, 404


@pytest.mark.parametrize(
    "path",
    [
        "/search/Distributed",
        "/search/nothing",
        "/search/" + "a" * 201,
        "/info",
        "/info/1",
        "/info/999",
        "/info/abc",
        "/orders",
        "/orders/unknown",
        "/orders?limit=2",
        "/health",
        "/openapi.json",
        "/docs",
        "/static/swagger-ui/swagger-ui.css",
        "/nope",
    ],
    ids=lambda path: path[:30],
)
def test_trailing_slash_is_optional_without_redirect(cluster: Cluster, path: str) -> None:
    plain, _, query = path.partition("?")
    slashed = plain + "/" + (f"?{query}" if query else "")
    settled_snapshot(cluster)
    first = call(cluster, "GET", path)
    second = call(cluster, "GET", slashed)
    assert second.status == first.status, second
    assert not 300 <= second.status < 400, second
    assert "location" not in second.headers
    assert second.headers.get("content-type") == first.headers.get("content-type")
    assert second.raw == first.raw


def test_trailing_slash_on_writes_and_other_routes(cluster: Cluster) -> None:
    set_stock(cluster, 1, 5)
    for method in ("PUT", "POST"):
        reply = call(cluster, method, "/purchase/1/")
        assert reply.status == 200, reply
        assert reply.json["order"]["book_id"] == 1
    assert stock_of(cluster, 1) == 3
    reply = send_json(cluster, "PATCH", "/books/1/", {"stock_delta": 2}, admin(cluster))
    assert reply.status == 200
    assert reply.json["data"]["stock"] == 5
    for path in ("/cluster/", "/metrics/", "/"):
        assert call(cluster, "GET", path).status == 200, path
    assert call(cluster, "GET", "/cluster/").json.keys() == {"data"}
    assert_error(call(cluster, "GET", "/purchase/1/"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/info/1"),
        ("GET", "/info/999"),
        ("GET", "/info/abc"),
        ("GET", "/purchase/1"),
        ("PATCH", "/books/1"),
        ("GET", "/nope"),
        ("GET", "/"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ],
    ids=lambda value: value.strip("/").replace("/", "-") or "root",
)
def test_every_response_carries_request_id(cluster: Cluster, method: str, path: str) -> None:
    generated = [call(cluster, method, path).headers.get("x-request-id") for _ in range(2)]
    assert all(generated), generated
    assert generated[0] != generated[1], generated
    sent = f"req-{uuid.uuid4().hex}"
    echoed = call(cluster, method, path, headers={"X-Request-Id": sent})
    assert echoed.headers.get("x-request-id") == sent


@pytest.mark.parametrize(
    "request_id",
    [b"r" * 201, b"a\tb", "caf\u00e9".encode("latin-1")],
    ids=["201-chars", "tab", "non-ascii"],
)
def test_unusable_request_id_is_replaced_not_echoed(cluster: Cluster, request_id: bytes) -> None:
    reply = raw_request(cluster.url, "GET", "/info/1", [("X-Request-Id", request_id)])
    assert reply.status == 200, reply
    answered = reply.headers.get("x-request-id", "")
    assert answered
    assert answered.encode("latin-1") != request_id
    assert answered.isascii()
    assert answered.isprintable()


def test_request_id_on_413_and_415(cluster: Cluster) -> None:
    sent = f"req-{uuid.uuid4().hex}"
    too_large = raw_request(
        cluster.url,
        "PUT",
        "/purchase/1",
        [*JSON_TYPE.items(), ("X-Request-Id", sent)],
        b" " * (BODY_MAX + 1),
        chunked=True,
    )
    assert_error(too_large, 413, "payload_too_large")
    assert too_large.headers.get("x-request-id") == sent
    wrong_type = raw_request(cluster.url, "PUT", "/purchase/1", [("X-Request-Id", sent)], b"1")
    assert_error(wrong_type, 415, "unsupported_media_type")
    assert wrong_type.headers.get("x-request-id") == sent


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/purchase/1", {"PUT", "POST"}),
        ("DELETE", "/purchase/1", {"PUT", "POST"}),
        ("PATCH", "/purchase/1", {"PUT", "POST"}),
        ("DELETE", "/info/1", {"GET"}),
        ("POST", "/info/1", {"GET"}),
        ("PUT", "/info", {"GET"}),
        ("POST", "/search/x", {"GET"}),
        ("POST", "/orders", {"GET"}),
        ("DELETE", "/orders/abc", {"GET"}),
        ("PUT", "/health", {"GET"}),
        ("POST", "/cluster", {"GET"}),
        ("POST", "/books/1", {"PATCH"}),
        ("GET", "/books/1", {"PATCH"}),
        ("DELETE", "/books/1", {"PATCH"}),
        ("POST", "/", {"GET"}),
    ],
    ids=lambda value: (
        ",".join(sorted(value)) if isinstance(value, set) else value.strip("/") or "root"
    ),
)
def test_wrong_method_is_405_with_allow(
    cluster: Cluster, method: str, path: str, allowed: set[str]
) -> None:
    before = settled_snapshot(cluster)
    reply = raw_request(cluster.url, method, path, list(JSON_TYPE.items()), b'{"stock_delta": 1}')
    assert_error(reply, 405, "method_not_allowed")
    allow = {item.strip().upper() for item in reply.headers.get("allow", "").split(",")}
    assert allowed <= allow, reply.headers
    assert method not in allow, reply.headers
    assert snapshot(cluster) == before


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Bearer {admin}"], ids=["none", "wrong", "admin"]
)
def test_405_takes_precedence_over_401(cluster: Cluster, authorization: str | None) -> None:
    headers = (
        {}
        if authorization is None
        else {"Authorization": authorization.format(admin=cluster.admin_token)}
    )
    for method in ("POST", "PUT", "GET"):
        reply = send_json(cluster, method, "/books/1", {"stock_delta": 1}, headers)
        assert_error(reply, 405, "method_not_allowed")
        assert "PATCH" in reply.headers.get("allow", "")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/info/1/extra"),
        ("GET", "/books"),
        ("PUT", "/purchase"),
        ("GET", "/internal/commit"),
        ("POST", "/internal/sell"),
        ("GET", "/static/index.html"),
        ("GET", "/INFO/1"),
    ],
    ids=lambda value: value.strip("/").replace("/", "-"),
)
def test_unknown_route_is_404_json(cluster: Cluster, method: str, path: str) -> None:
    assert_error(call(cluster, method, path), 404, "not_found")


# ---------------------------------------------------------------- internal routes and secrets


CATALOG_INTERNAL = [
    ("GET", "/books"),
    ("GET", "/books/1"),
    ("GET", "/search/x"),
    ("POST", "/internal/sell"),
    ("POST", "/internal/books/1"),
    ("POST", "/internal/append"),
    ("GET", "/internal/digest"),
    ("GET", "/internal/commit"),
]
ORDER_INTERNAL = [
    ("GET", "/orders"),
    ("GET", "/orders/x"),
    ("POST", "/internal/purchase"),
    ("POST", "/internal/append"),
    ("GET", "/internal/digest"),
    ("GET", "/internal/commit"),
]
INTERNAL = [("catalog", m, p) for m, p in CATALOG_INTERNAL] + [
    ("order", m, p) for m, p in ORDER_INTERNAL
]
INTRUDER = {"idempotency_key": "intruder", "book_id": 1, "quantity": 1}
WRITE_BODIES = {  # valid writes: only the missing secret stops them
    "/internal/sell": {"sells": [INTRUDER]},
    "/internal/books/1": {"book_id": 1, "stock_delta": -1},
    "/internal/purchase": {"purchases": [INTRUDER]},
}


@pytest.mark.parametrize(("tier", "method", "path"), INTERNAL, ids=lambda v: v.strip("/"))
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-secret", "Bearer {admin}", "Basic {secret}", "{secret}", "Bearer"],
    ids=["none", "wrong", "admin-token", "basic", "no-scheme", "empty-bearer"],
)
def test_internal_routes_require_the_cluster_secret(
    cluster: Cluster, tier: str, method: str, path: str, authorization: str | None
) -> None:
    set_stock(cluster, 1, 5)
    before = settled_snapshot(cluster)
    headers: list[tuple[str, str | bytes]] = list(JSON_TYPE.items())
    if authorization is not None:
        value = authorization.format(admin=cluster.admin_token, secret=cluster.secret)
        headers.append(("Authorization", value))
    body = json.dumps(WRITE_BODIES.get(path, {})).encode() if method == "POST" else None
    for url in cluster.replica_urls(tier).values():
        reply = raw_request(url, method, path, headers, body)
        assert_error(reply, 401, "unauthorized")
    assert snapshot(cluster) == before


@pytest.mark.parametrize(
    ("tier", "method", "path"),
    [
        ("catalog", "GET", "/internal/sell"),
        ("catalog", "DELETE", "/books/1"),
        ("order", "PUT", "/internal/purchase"),
        ("order", "POST", "/orders"),
    ],
    ids=lambda v: v.strip("/"),
)
def test_internal_405_takes_precedence_over_401(
    cluster: Cluster, tier: str, method: str, path: str
) -> None:
    for url in cluster.replica_urls(tier).values():
        assert_error(raw_request(url, method, path), 405, "method_not_allowed")


def test_internal_reads_with_the_secret(cluster: Cluster) -> None:
    set_stock(cluster, 1, 5)
    order = buy(cluster, 1).json["order"]
    settled_snapshot(cluster)
    for url in cluster.replica_urls("catalog").values():
        status, body = cluster.internal("GET", url, "/books")
        assert status == 200, body
        assert [book["id"] for book in body["data"]] == sorted(INITIAL)
        for book in body["data"]:
            assert_book_shape(book)
        status, body = cluster.internal("GET", url, "/books/1")
        assert status == 200, body
        assert body["data"] == book_of(cluster, 1)
        status, body = cluster.internal("GET", url, "/search/distributed")
        assert status == 200, body
        assert [book["id"] for book in body["data"]] == DISTRIBUTED
        status, body = cluster.internal("GET", url, "/books/999")
        assert status == 404
        assert body["error"]["code"] == "not_found"
    for url in cluster.replica_urls("order").values():
        status, body = cluster.internal("GET", url, "/orders?limit=1000")
        assert status == 200, body
        assert body["data"] == all_orders(cluster)
        assert body["next"] is None
        status, body = cluster.internal("GET", url, "/orders?limit=1")
        assert status == 200
        assert len(body["data"]) == 1
        assert body["next"] == body["data"][0]["id"]
        status, body = cluster.internal("GET", url, "/orders?after=nope")
        assert status == 422
        assert body["error"]["code"] == "invalid_request"
        status, body = cluster.internal("GET", url, f"/orders/{order['id']}")
        assert status == 200
        assert body["data"] == order


def _listening_hosts(port: int) -> set[str]:
    """The local addresses listening on `port` (TCP, IPv4 and IPv6), from /proc/net."""
    hosts: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                address, port_hex = fields[1].split(":")
                if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                    hosts.add(address)
    return hosts


def test_services_bind_loopback_only(cluster: Cluster) -> None:
    info = cluster.cluster_info()
    urls = [cluster.url] + [
        r["url"] for tier in ("catalog", "order") for r in info[tier]["replicas"]
    ]
    assert len(urls) == 5
    loopback = format(0x0100007F, "08X")  # 127.0.0.1 as /proc/net/tcp writes it
    for url in urls:
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1", url
        assert parts.port is not None
        if os.path.exists("/proc/net/tcp"):
            assert _listening_hosts(parts.port) == {loopback}, url


def test_secret_files_are_private_and_distinct(cluster: Cluster) -> None:
    paths = [Path(cluster.data_dir) / "cluster.secret", Path(cluster.data_dir) / "admin.token"]
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    secret, token = (path.read_text().strip() for path in paths)
    assert secret
    assert token
    assert secret != token
    assert len(secret) >= 16
    assert len(token) >= 16


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/info/" + "9" * 5000, 422),
        ("/orders?limit=" + "1" * 5000, 422),
        ("/info/" + "0" * 4500 + "1", 200),
    ],
    ids=["id-5000-digits", "limit-5000-digits", "id-4500-leading-zeros"],
)
def test_numbers_longer_than_int_parsing_allows_are_clean_answers(
    cluster: Cluster, path: str, status: int
) -> None:
    got, body = cluster.json("GET", path)
    assert got == status, body
