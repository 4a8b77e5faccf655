"""Bad input never hurts (docs/contract.md §3.7, §8): a table of malformed requests against a real
2+2 cluster. Each gets its 4xx status and exactly `{"error": {"code", "message"}}` as JSON (never
5xx, never HTML) and changes nothing: the committed state of every replica (books on each catalog
replica, orders on each order replica, read with the cluster secret) is the same before and after.

Requests go through http.client, so each one carries exactly the headers and body framing its
row says (no Content-Type added, chunked bodies without Content-Length, raw header bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from bazar.testing.cluster import Cluster
from bazar.testing.probe import assert_error, raw_request, settled_snapshot, snapshot

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
BODY_MAX = 64 * 1024
KEY = "Idempotency-Key"
REPLICAS = 4  # the 2+2 cluster of tests/conftest.py

Auth = Literal["none", "admin", "wrong"]


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    status: int
    code: str
    body: bytes | None = None
    content_type: str | None = None
    headers: tuple[tuple[str, str | bytes], ...] = ()
    chunked: bool = False
    auth: Auth = "none"


INVALID = "invalid_request"
MEDIA = "unsupported_media_type"
TOO_LARGE = "payload_too_large"
DELTA_1 = b'{"stock_delta": 1}'


def get(id: str, path: str, status: int = 422, code: str = INVALID) -> Case:
    return Case(id, "GET", path, status, code)


def purchase(
    id: str,
    body: bytes | None,
    content_type: str | None = JSON,
    status: int = 422,
    code: str = INVALID,
    *,
    method: str = "PUT",
    path: str = "/purchase/1",
    headers: tuple[tuple[str, str | bytes], ...] = (),
    chunked: bool = False,
) -> Case:
    return Case(id, method, path, status, code, body, content_type, headers, chunked)


def form(id: str, body: bytes) -> Case:
    return purchase(id, body, FORM, method="POST")


def key(id: str, value: str | bytes) -> Case:
    return purchase(id, None, None, headers=((KEY, value),))


def patch(
    id: str,
    body: bytes | None,
    content_type: str | None = JSON,
    status: int = 422,
    code: str = INVALID,
    *,
    path: str = "/books/1",
    auth: Auth = "admin",
    chunked: bool = False,
    headers: tuple[tuple[str, str | bytes], ...] = (),
) -> Case:
    return Case(id, "PATCH", path, status, code, body, content_type, headers, chunked, auth)


CASES: list[Case] = [
    # ---------------------------------------------------------------- ids
    get("info-id-letters", "/info/abc"),
    get("info-id-zero", "/info/0"),
    get("info-id-negative", "/info/-1"),
    get("info-id-2^63", f"/info/{2**63}"),
    get("info-id-arabic-digit", "/info/%D9%A1"),
    get("info-id-plus", "/info/+1"),
    get("info-id-leading-space", "/info/%201"),
    get("info-id-tab", "/info/1%09"),
    get("info-id-decimal", "/info/1.5"),
    get("info-id-nul", "/info/1%00"),
    get("info-unknown-id", "/info/424242", 404, "not_found"),
    purchase("purchase-id-letters", None, None, path="/purchase/abc"),
    purchase("purchase-id-zero", None, None, method="POST", path="/purchase/0"),
    purchase("purchase-id-2^63", None, None, path=f"/purchase/{2**63}"),
    purchase("purchase-id-arabic-digit", None, None, path="/purchase/%D9%A1"),
    purchase("purchase-id-plus", None, None, path="/purchase/+1"),
    purchase("purchase-unknown-book", None, None, 404, "not_found", path="/purchase/424242"),
    patch("patch-id-zero", DELTA_1, path="/books/0"),
    patch("patch-id-letters", DELTA_1, path="/books/x"),
    patch("patch-unknown-book", DELTA_1, JSON, 404, "not_found", path="/books/424242"),
    get("order-id-malformed", "/orders/not-an-order!", 404, "not_found"),
    get("order-id-too-long", "/orders/" + "a" * 65, 404, "not_found"),
    get("order-id-unknown", "/orders/" + "0" * 32, 404, "not_found"),
    # ---------------------------------------------------------------- topics
    get("search-no-topic", "/search"),
    get("search-empty-topic", "/search/"),
    get("search-blank-topic", "/search/%20%20"),
    get("search-tab-topic", "/search/%09"),
    get("search-201-chars", "/search/" + "x" * 201),
    # ---------------------------------------------------------------- purchase JSON bodies
    purchase("json-truncated", b"{"),
    purchase("json-garbage", b"quantity=2"),
    purchase("json-not-utf8", b'{"quantity": "\xff"}'),
    purchase("json-trailing-garbage", b'{"quantity": 1} x'),
    purchase("json-null", b"null"),
    purchase("json-array", b"[1]"),
    purchase("json-string", b'"2"'),
    purchase("json-number", b"2"),
    purchase("json-deep-nesting", b"[" * 5000 + b"]" * 5000),
    purchase("quantity-string", b'{"quantity": "2"}'),
    purchase("quantity-float", b'{"quantity": 2.0}'),
    purchase("quantity-exponent", b'{"quantity": 1e3}'),
    purchase("quantity-true", b'{"quantity": true}'),
    purchase("quantity-null", b'{"quantity": null}'),
    purchase("quantity-object", b'{"quantity": {"n": 1}}'),
    purchase("quantity-zero", b'{"quantity": 0}'),
    purchase("quantity-1001", b'{"quantity": 1001}'),
    purchase("quantity-negative", b'{"quantity": -5}'),
    purchase("quantity-huge", b'{"quantity": 123456789012345678901234567890}'),
    purchase("item-number-string", b'{"item_number": "two"}'),
    purchase("item-number-float", b'{"item_number": 1.5}'),
    purchase("item-number-and-quantity", b'{"item_number": 1, "quantity": 1}'),
    purchase("unknown-json-key", b'{"quantity": 1, "colour": "red"}'),
    purchase("only-unknown-json-key", b'{"book": 2}'),
    purchase("bad-json-on-unknown-book", b'{"quantity": 0}', path="/purchase/424242"),
    # A 409 out_of_stock is not here: it stores its result under its key (docs/contract.md §8),
    # so it changes the idempotency tables by design; test_api and test_seed_defects cover it.
    # ---------------------------------------------------------------- purchase form bodies
    form("form-empty-value", b"item_number="),
    form("form-letters", b"item_number=two"),
    form("form-zero", b"item_number=0"),
    form("form-1001", b"item_number=1001"),
    form("form-negative", b"item_number=-1"),
    form("form-decimal", b"item_number=1.0"),
    form("form-arabic-digit", b"item_number=%D9%A1"),
    form("form-repeated", b"item_number=1&item_number=2"),
    form("form-not-a-form", b"{{{"),
    # ---------------------------------------------------------------- media types and sizes
    purchase("text-plain-body", b"1", "text/plain", 415, MEDIA),
    purchase("xml-body", b"<q>1</q>", "application/xml", 415, MEDIA, method="POST"),
    purchase("multipart-body", b"--x--", "multipart/form-data; boundary=x", 415, MEDIA),
    purchase("body-without-content-type", b'{"quantity": 1}', None, 415, MEDIA),
    purchase("body-too-large", b"{}".ljust(BODY_MAX + 1, b" "), JSON, 413, TOO_LARGE),
    purchase(
        "chunked-body-too-large",
        b"{}".ljust(3 * BODY_MAX, b" "),
        JSON,
        413,
        TOO_LARGE,
        chunked=True,
    ),
    purchase(
        "chunked-form-too-large",
        b"item_number=1".ljust(BODY_MAX + 1, b"0"),
        FORM,
        413,
        TOO_LARGE,
        method="POST",
        chunked=True,
    ),
    patch(
        "chunked-patch-too-large", DELTA_1.ljust(BODY_MAX + 1), JSON, 413, TOO_LARGE, chunked=True
    ),
    # ---------------------------------------------------------------- Idempotency-Key
    key("key-empty", ""),
    key("key-256-chars", "k" * 256),
    key("key-latin1-non-ascii", "clé".encode("latin-1")),
    key("key-utf8-non-ascii", "clé".encode()),
    key("key-tab-control-char", b"a\tb"),
    patch("patch-key-empty", DELTA_1, headers=((KEY, ""),)),
    patch("patch-key-256-chars", DELTA_1, headers=((KEY, "k" * 256),)),
    patch("patch-key-utf8-non-ascii", DELTA_1, headers=((KEY, "clé".encode()),)),
    # ---------------------------------------------------------------- PATCH /books bodies
    patch("patch-empty-object", b"{}"),
    patch("patch-empty-body", b""),
    # An empty body asks for nothing, like {}: 422 whatever its content type, never 415.
    patch("patch-empty-body-no-content-type", b"", None),
    patch("patch-empty-body-text-plain", b"", "text/plain"),
    patch("patch-empty-body-form", b"", FORM),
    patch("patch-no-body", None, None),
    patch("patch-not-json", b"stock_delta=1"),
    patch("patch-array", b"[]"),
    patch("patch-null", b"null"),
    patch("patch-negative-cost", b'{"cost": -1}'),
    patch("patch-cost-3-decimals", b'{"cost": 1.234}'),
    patch("patch-cost-string", b'{"cost": "10"}'),
    patch("patch-cost-huge", b'{"cost": 1e300}'),
    patch("patch-stock-delta-float", b'{"stock_delta": 1.5}'),
    patch("patch-stock-delta-string", b'{"stock_delta": "5"}'),
    patch("patch-stock-delta-above-1e9", b'{"stock_delta": 1000000001}'),
    patch("patch-stock-delta-below-minus-1e9", b'{"stock_delta": -1000000001}'),
    patch("patch-unknown-key", b'{"stock_delta": 1, "title": "x"}'),
    patch("patch-form-body", b"stock_delta=1", FORM, 415, MEDIA),
    patch("patch-no-content-type", DELTA_1, None, 415, MEDIA),
    patch("patch-without-token", DELTA_1, JSON, 401, "unauthorized", auth="none"),
    patch("patch-wrong-token", DELTA_1, JSON, 401, "unauthorized", auth="wrong"),
    # ---------------------------------------------------------------- paging
    get("paging-limit-zero", "/orders?limit=0"),
    get("paging-limit-1001", "/orders?limit=1001"),
    get("paging-limit-letters", "/orders?limit=abc"),
    get("paging-limit-negative", "/orders?limit=-1"),
    get("paging-limit-empty", "/orders?limit="),
    get("paging-after-unknown", "/orders?after=nope"),
    # ---------------------------------------------------------------- methods and routes
    get("get-purchase", "/purchase/1", 405, "method_not_allowed"),
    Case("delete-info", "DELETE", "/info/1", 405, "method_not_allowed"),
    purchase(
        "post-books-without-token",
        DELTA_1,
        JSON,
        405,
        "method_not_allowed",
        method="POST",
        path="/books/1",
    ),
    get("unknown-route", "/no/such/route", 404, "not_found"),
    purchase(
        "unknown-route-with-body",
        b'{"book_id": 1}',
        JSON,
        404,
        "not_found",
        method="POST",
        path="/internal/sell",
    ),
]

assert len(CASES) >= 40
assert len({case.id for case in CASES}) == len(CASES), "case ids are unique"


# ---------------------------------------------------------------- helpers


def headers_of(cluster: Cluster, case: Case) -> list[tuple[str, str | bytes]]:
    headers = list(case.headers)
    if case.content_type is not None:
        headers.append(("Content-Type", case.content_type))
    if case.auth == "admin":
        headers.append(("Authorization", f"Bearer {cluster.admin_token}"))
    elif case.auth == "wrong":
        headers.append(("Authorization", "Bearer not-the-admin-token"))
    return headers


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_request_is_a_clean_4xx_and_changes_nothing(cluster: Cluster, case: Case) -> None:
    before = settled_snapshot(cluster, replicas=REPLICAS)
    reply = raw_request(
        cluster.url,
        case.method,
        case.path,
        headers_of(cluster, case),
        case.body,
        chunked=case.chunked,
    )
    assert reply.status < 500, (reply.status, reply.raw[:300])
    assert_error(reply, case.status, case.code)
    assert reply.headers.get("x-request-id"), reply.headers
    if case.status == 405:
        assert reply.headers.get("allow"), reply.headers
    assert snapshot(cluster, replicas=REPLICAS) == before


@pytest.mark.parametrize("value", [b"a\x01b", b"a\x7fb", b"a\x00b"], ids=["soh", "del", "nul"])
def test_header_the_http_parser_refuses_is_4xx_and_changes_nothing(
    cluster: Cluster, value: bytes
) -> None:
    """A control character other than HTAB makes the request invalid HTTP (RFC 9110 §5.5):
    the HTTP server refuses it before the application sees it. It must still be a 4xx that
    changes nothing (the body is the server's, not ours, so its shape is not checked)."""
    before = settled_snapshot(cluster, replicas=REPLICAS)
    reply = raw_request(cluster.url, "PUT", "/purchase/1", [(KEY, value)])
    assert 400 <= reply.status < 500, (reply.status, reply.raw[:300])
    assert snapshot(cluster, replicas=REPLICAS) == before


def test_nothing_changed_after_all_the_bad_input(cluster: Cluster) -> None:
    """The initial catalog is intact and no order exists after the whole table ran."""
    state = settled_snapshot(cluster, replicas=REPLICAS)
    books = {book["id"]: (book["stock"], book["cost"]) for book in state["catalog-1"]}
    assert books == {
        1: (6, 10),
        2: (5, 15),
        3: (4, 12),
        4: (3, 20),
        5: (8, 25),
        6: (7, 18),
        7: (9, 30),
    }
    assert state["order-1"] == []
