"""The OpenAPI 3.1 document of the public front-end API (docs/contract.md §2 and §8).

Why built, not written: the schemas come from the msgspec Structs of `wire.py` through
`msgspec.json.schema_components`, so the document cannot drift from what the server encodes,
and the limits come from `config.LIMITS`, so it cannot drift from what the server enforces.
What the Structs cannot say (ranges, "not both", "at least one field") is added here, on a
fresh copy of the components, as JSON Schema keywords.

Rules: only the public front end is described (internal replica routes need the cluster
secret and are not part of the contract); every error response references `ErrorBody`;
nothing is cached at module level: the caller builds the document once and keeps the bytes.
"""

from __future__ import annotations

import msgspec
import orjson

from bazar import __version__, wire
from bazar.config import LIMITS
from bazar.money import COST_CENTS_MAX

Json = dict[str, object]

SCHEMA_REF = "#/components/schemas/{name}"
ID_MAX = 2**63 - 1
BMP_END = 0x10000
COST_MAX = COST_CENTS_MAX // 100  # the catalog stores integer cents
ORDER_ID_EXAMPLE = "5f0c6a9e2b7d4c1f8a3e9d2b6c4f1a07"  # the shape the order service makes

# Every Struct the public API sends or receives; their components make up `components.schemas`.
PUBLIC_TYPES: tuple[type[wire.Struct], ...] = (
    wire.Book,
    wire.Order,
    wire.ErrorBody,
    wire.PurchaseBody,
    wire.BookPatch,
    wire.BookData,
    wire.BookListData,
    wire.PurchaseData,
    wire.OrderData,
    wire.OrderPage,
    wire.HealthData,
    wire.ClusterData,
    wire.ReplicaAdd,
    wire.Switchover,
    wire.ReplicaData,
    wire.TierData,
)


def example_book() -> Json:
    """Book 2 of the initial catalog; fresh each call, so no caller can change a shared one."""
    return {
        "id": 2,
        "title": "RPCs for Noobs",
        "topic": "Distributed Systems",
        "stock": 5,
        "cost": 15,
    }


def example_order() -> Json:
    return {
        "id": ORDER_ID_EXAMPLE,
        "book_id": 2,
        "quantity": 1,
        "unit_cost": 15,
        "total_cost": 15,
        "status": "completed",
        "created_at": "2025-01-01T12:00:00Z",
    }


def example_replica(name: str, port: int) -> Json:
    """An in-sync backup of the examples."""
    return {
        "name": name,
        "url": f"http://127.0.0.1:{port}",
        "role": "backup",
        "state": "in_sync",
        "pid": 4100 + port % 100,
        "last_seq": 42,
        "commit_seq": 42,
    }


def example_tier(tier: str, ports: tuple[int, int]) -> Json:
    """One tier of the `/cluster` example: replica 1 is primary, replica 2 an in-sync backup."""
    replicas = [example_replica(f"{tier}-{n}", port) for n, port in enumerate(ports, start=1)]
    replicas[0]["role"] = "primary"
    return {"epoch": 1, "primary": f"{tier}-1", "replicas": replicas}


def example_cluster() -> Json:
    cache = {
        "enabled": True,
        "entries": 9,
        "hits": 120,
        "misses": 14,
        "invalidations": 3,
        "rejected_fills": 0,
    }
    return {
        "data": {
            "catalog": example_tier("catalog", (8003, 8004)),
            "order": example_tier("order", (8001, 8005)),
            "cache": cache,
        }
    }


# (code, summary, example message) of every error the public API answers with.
ERROR_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    ("invalid_request", "Malformed request", "quantity must be an integer in 1..1000"),
    ("idempotency_key_reused", "Key reused", "idempotency key was used for another request"),
    ("idempotency_key_in_use", "Key in use", "a purchase with this idempotency key is running"),
    ("not_found", "Not found", "no book with id 99"),
    ("out_of_stock", "Out of stock", "book 2 has 0 in stock, 1 requested"),
    ("unauthorized", "Unauthorized", "missing or wrong admin token"),
    ("last_replica", "Last replica", "catalog-1 is the only in-sync replica of catalog"),
    ("not_in_sync", "Not in sync", "catalog-2 is not an in-sync backup of catalog"),
    ("too_many_replicas", "Too many replicas", "catalog has 9 replicas, the most it may have"),
    ("payload_too_large", "Body too large", "request body exceeds 65536 bytes"),
    ("unsupported_media_type", "Unsupported media type", "content type text/plain"),
    ("unavailable", "Unavailable", "no primary can take writes now; retry with the same key"),
)


def openapi_document() -> dict[str, object]:
    """Build the whole OpenAPI 3.1 document of the public API, as plain JSON-ready dicts."""
    return {
        "openapi": "3.1.0",
        "info": document_info(),
        "servers": [{"url": "/", "description": "this front end"}],
        "tags": [
            {"name": "store", "description": "Browse the catalog and buy books."},
            {"name": "orders", "description": "Read the replicated order log."},
            {"name": "admin", "description": "Change a book (admin token required)."},
            {
                "name": "membership",
                "description": "Add and remove replicas, move a primary (admin token required).",
            },
            {"name": "operations", "description": "Health, cluster view and metrics."},
            {"name": "pages", "description": "Human-facing pages and this document."},
        ],
        "paths": document_paths(),
        "components": {
            "schemas": document_schemas(),
            "headers": document_headers(),
            "securitySchemes": {
                "admin": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token (`BAZAR_ADMIN_TOKEN` or "
                    "`<data-dir>/admin.token`).",
                }
            },
        },
    }


def openapi_json() -> bytes:
    """The document encoded as JSON; the caller computes it once and serves the bytes."""
    return orjson.dumps(openapi_document())


def document_info() -> Json:
    return {
        "title": "Bazar",
        "version": __version__,
        "summary": "A replicated online bookstore.",
        "description": (
            "The public API of the Bazar front end. Every route works with or without a "
            'trailing slash. Success bodies are `{"data": ...}`; errors are always '
            '`{"error": {"code": "<snake_case>", "message": "<text>"}}` with a 4xx or 5xx '
            "status. Every response carries `X-Request-Id` (echoed when the client sends one). "
            "A method a route does not take gets 405 `method_not_allowed` with `Allow`. "
            "Purchases are exactly once per `Idempotency-Key`."
        ),
    }


def document_schemas() -> Json:
    """The wire Structs as schema components, refined with the limits the server enforces."""
    _, components = msgspec.json.schema_components(PUBLIC_TYPES, ref_template=SCHEMA_REF)
    schemas: Json = dict(components)
    quantity: Json = {
        "type": "integer",
        "minimum": 1,
        "maximum": LIMITS.quantity_max,
        "description": "How many copies to buy.",
    }
    purchase = refined(schemas, "PurchaseBody")
    purchase["properties"] = {
        "item_number": {**quantity, "description": "The quantity (the lab's name for it)."},
        "quantity": quantity,
    }
    # Not both: with no other property allowed, at most one. (`not: {required: [...]}` says
    # the same, but Swagger UI renders it as a schema nothing matches.)
    assert purchase["additionalProperties"] is False
    purchase["maxProperties"] = 1
    patch = refined(schemas, "BookPatch")
    patch["properties"] = {
        "cost": {
            "type": "number",
            "minimum": 0,
            "maximum": COST_MAX,
            "multipleOf": 0.01,
            "description": "New unit cost, with at most 2 decimals.",
        },
        "stock_delta": {
            "type": "integer",
            "minimum": -LIMITS.stock_delta_abs_max,
            "maximum": LIMITS.stock_delta_abs_max,
            "description": "Added to the stock (negative reduces it; stock never goes below 0).",
        },
    }
    patch["minProperties"] = 1
    book = refined(schemas, "Book")
    book["properties"] = {
        "id": {"type": "integer", "minimum": 1, "maximum": ID_MAX},
        "title": {"type": "string"},
        "topic": {"type": "string"},
        "stock": {"type": "integer", "minimum": 0},
        "cost": {
            "type": "number",
            "minimum": 0,
            "maximum": COST_MAX,
            "description": "Money, at most 2 decimals.",
        },
    }
    return schemas


def refined(schemas: Json, name: str) -> Json:
    """A copy of one component, stored back in `schemas`, for this module to add keywords to."""
    schema = schemas[name]
    assert isinstance(schema, dict), name
    copy: Json = dict(schema)
    schemas[name] = copy
    return copy


def document_headers() -> Json:
    return {
        "X-Request-Id": {
            "description": "The request's id: the client's `X-Request-Id` or a fresh one.",
            "schema": {"type": "string"},
        },
        "Retry-After": {
            "description": "Whole seconds to wait before retrying (with the same key).",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        },
        "Idempotent-Replayed": {
            "description": "`true` when this is the stored answer of an earlier request "
            "with the same `Idempotency-Key`; absent on the first answer.",
            "schema": {"type": "string", "enum": ["true"]},
        },
    }


def header_ref(name: str) -> Json:
    return {"$ref": f"#/components/headers/{name}"}


def schema_ref(name: str) -> Json:
    return {"$ref": SCHEMA_REF.format(name=name)}


def json_response(description: str, schema: str, example: object) -> Json:
    """A 200 answer whose body is the `schema` component."""
    return {
        "description": description,
        "headers": {"X-Request-Id": header_ref("X-Request-Id")},
        "content": {"application/json": {"schema": schema_ref(schema), "example": example}},
    }


def text_response(description: str, media_type: str, example: str) -> Json:
    return {
        "description": description,
        "headers": {"X-Request-Id": header_ref("X-Request-Id")},
        "content": {media_type: {"schema": {"type": "string"}, "example": example}},
    }


def error_response(
    description: str, codes: tuple[str, ...], *, retry_after: bool = False, message: str = ""
) -> Json:
    """An error answer: an `ErrorBody` with one named example per possible code.

    `message` replaces the example message of the only code, where a route has a better one.
    """
    assert not message or len(codes) == 1, codes
    examples: Json = {}
    for code, summary, default_message in ERROR_EXAMPLES:
        if code in codes:
            text = message or default_message
            examples[code] = {
                "summary": summary,
                "value": {"error": {"code": code, "message": text}},
            }
    assert len(examples) == len(codes), codes
    headers: Json = {"X-Request-Id": header_ref("X-Request-Id")}
    if retry_after:
        headers["Retry-After"] = header_ref("Retry-After")
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": schema_ref("ErrorBody"), "examples": examples}},
    }


def invalid(description: str, message: str) -> Json:
    return error_response(description, ("invalid_request",), message=message)


def unavailable_read() -> Json:
    return error_response("No replica of the tier can answer now.", ("unavailable",))


def parameter(
    name: str, location: str, description: str, schema: Json, example: object = None
) -> Json:
    """One parameter; path parameters are required, the others optional (docs/contract.md §2)."""
    entry: Json = {
        "name": name,
        "in": location,
        "required": location == "path",
        "description": description,
        "schema": schema,
    }
    if example is not None:
        entry["example"] = example
    return entry


def book_id_parameter() -> Json:
    description = "The book's id: ASCII decimal digits, a positive integer."
    schema: Json = {"type": "integer", "minimum": 1, "maximum": ID_MAX}
    return parameter("id", "path", description, schema, example=2)


def document_paths() -> Json:
    """Every public route, grouped as the docs/contract.md §2 table lists them."""
    return {
        **store_paths(),
        **purchase_paths(),
        **order_paths(),
        **admin_paths(),
        **membership_paths(),
        **operation_paths(),
        **page_paths(),
    }


def not_blank_pattern() -> str:
    """A pattern that text matches when it has a character `str.strip` keeps (a topic that
    is only whitespace is 422). Spelled out as escapes, not `\\S`: JSON Schema's (ECMA 262)
    whitespace is not Python's (`\\x1c`-`\\x1f` and `\\x85` are whitespace only to Python,
    `\\ufeff` only to ECMA), and the document must say what the server does."""
    # The BMP only (every whitespace character lies there): the unit test scans all of Unicode.
    spaces = [code for code in range(BMP_END) if chr(code).isspace()]
    assert spaces, "no whitespace at all"
    ranges: list[tuple[int, int]] = []
    for code in spaces:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    parts = [regex_char(lo) + (f"-{regex_char(hi)}" if hi > lo else "") for lo, hi in ranges]
    return f"[^{''.join(parts)}]"


def regex_char(code: int) -> str:
    """One character as a regex escape both ECMA 262 and Python read alike."""
    assert code < BMP_END, code  # `\\u` takes four digits
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def store_paths() -> Json:
    topic_schema: Json = {"type": "string", "minLength": 1, "maxLength": LIMITS.topic_chars_max}
    topic_schema["pattern"] = not_blank_pattern()
    topic = parameter(
        "topic",
        "path",
        "Matched case-insensitively as a substring of each book's topic.",
        topic_schema,
        example="distributed",
    )
    return {
        "/search/{topic}": {
            "get": {
                "operationId": "searchBooks",
                "tags": ["store"],
                "summary": "Search books by topic",
                "description": "Books whose topic contains `topic`, ordered by id; `[]` when "
                "none. Empty, whitespace-only or over-long topics are rejected.",
                "parameters": [topic],
                "responses": {
                    "200": json_response(
                        "Matching books.", "BookListData", {"data": [example_book()]}
                    ),
                    "422": invalid(
                        "The topic is empty, only whitespace or too long.",
                        "topic must be 1..200 characters, not only whitespace",
                    ),
                    "503": unavailable_read(),
                },
            }
        },
        "/info/{id}": {
            "get": {
                "operationId": "getBook",
                "tags": ["store"],
                "summary": "Get one book",
                "parameters": [book_id_parameter()],
                "responses": {
                    "200": json_response("The book.", "BookData", {"data": example_book()}),
                    "404": error_response("No book has this id.", ("not_found",)),
                    "422": invalid(
                        "The id is not a positive ASCII integer below 2^63.",
                        "book id must be a positive integer",
                    ),
                    "503": unavailable_read(),
                },
            }
        },
        "/info": {
            "get": {
                "operationId": "listBooks",
                "tags": ["store"],
                "summary": "List all books",
                "description": "Every book, ordered by id.",
                "responses": {
                    "200": json_response("All books.", "BookListData", {"data": [example_book()]}),
                    "503": unavailable_read(),
                },
            }
        },
    }


def purchase_paths() -> Json:
    return {
        "/purchase/{id}": {
            "post": purchase_operation("purchaseBook", "Buy a book"),
            "put": purchase_operation("purchaseBookPut", "Buy a book (PUT, as in the lab)"),
        }
    }


def purchase_operation(operation_id: str, summary: str) -> Json:
    """PUT and POST `/purchase/{id}` take the same request and give the same answers."""
    return {
        "operationId": operation_id,
        "tags": ["store"],
        "summary": summary,
        "description": "Buys `quantity` copies (default 1: no body, an empty body or `{}`). "
        "`item_number` is a synonym of `quantity`; giving both is rejected.",
        "parameters": [book_id_parameter(), idempotency_key_parameter("purchase")],
        "requestBody": purchase_request_body(),
        "responses": purchase_responses(),
    }


def idempotency_key_parameter(what: str) -> Json:
    """The `Idempotency-Key` header of a write (`what`: a purchase, an update)."""
    description = (
        f"Makes the {what} exactly once: a retry with the same key gets the first answer "
        "(a UUID is a good key). Without it the front end generates one per request (and "
        "names it in the answer's `Idempotency-Key` header)."
    )
    key_chars_max = LIMITS.idempotency_key_chars_max
    schema: Json = {"type": "string", "minLength": 1, "maxLength": key_chars_max}
    # Printable ASCII, no space at either end: HTTP drops spaces around a header's value
    # (RFC 9110 §5.5), so the server would never see them.
    schema["pattern"] = "^[!-~](?:[ -~]*[!-~])?$"
    # No example: "Try it out" would fill it in, and every purchase tried would replay the first.
    return parameter("Idempotency-Key", "header", description, schema)


def replayable(response: Json) -> Json:
    """A write's success, which may be the replay of an earlier one with the same key."""
    response["headers"] = {
        "X-Request-Id": header_ref("X-Request-Id"),
        "Idempotent-Replayed": header_ref("Idempotent-Replayed"),
    }
    return response


def purchase_request_body() -> Json:
    form_quantity: Json = {"type": "integer", "minimum": 1, "maximum": LIMITS.quantity_max}
    return {
        "required": False,
        "content": {
            "application/json": {
                "schema": schema_ref("PurchaseBody"),
                "example": {"quantity": 1},
            },
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {"item_number": form_quantity, "quantity": form_quantity},
                    "additionalProperties": False,
                    "maxProperties": 1,
                    "description": "`item_number` (or `quantity`) once; no other field.",
                },
                "example": {"item_number": 1},
            },
        },
    }


def purchase_responses() -> Json:
    done: Json = json_response(
        "The purchase is done (or is the replay of an earlier one with the same key).",
        "PurchaseData",
        {"data": "Purchase done", "order": example_order()},
    )
    return {
        "200": replayable(done),
        "404": error_response("No book has this id.", ("not_found",)),
        "409": error_response(
            "Not enough stock (the stock is unchanged), or a request with the same key "
            "is still running (retry after `Retry-After`).",
            ("out_of_stock", "idempotency_key_in_use"),
        ),
        "413": too_large_response(),
        "415": error_response("The body is neither JSON nor a form.", ("unsupported_media_type",)),
        "422": error_response(
            "Bad id, quantity, JSON or key; or the key was used for another purchase.",
            ("invalid_request", "idempotency_key_reused"),
        ),
        "503": error_response(
            "No primary can take the write now; retry with the same key.",
            ("unavailable",),
            retry_after=True,
        ),
    }


def order_paths() -> Json:
    order_id = parameter(
        "id",
        "path",
        "The order's id, as returned by a purchase (opaque text).",
        {"type": "string", "minLength": 1},
        example=ORDER_ID_EXAMPLE,
    )
    limit_schema: Json = {"type": "integer", "minimum": 1, "maximum": LIMITS.page_limit_max}
    limit_schema["default"] = LIMITS.page_limit_default
    limit = parameter("limit", "query", "Orders per page.", limit_schema)
    after = parameter(
        "after",
        "query",
        "The `next` of the previous page: start after this order id. An id that names no "
        "order is refused with 422 (a cursor must name an order).",
        {"type": "string", "minLength": 1},
    )
    page = {"data": [example_order()], "next": None}
    return {
        "/orders/{id}": {
            "get": {
                "operationId": "getOrder",
                "tags": ["orders"],
                "summary": "Get one order",
                "parameters": [order_id],
                "responses": {
                    "200": json_response("The order.", "OrderData", {"data": example_order()}),
                    "404": error_response("No order has this id.", ("not_found",)),
                    "503": unavailable_read(),
                },
            }
        },
        "/orders": {
            "get": {
                "operationId": "listOrders",
                "tags": ["orders"],
                "summary": "List orders, oldest first",
                "description": "Pages in commit order; `next` is null on the last page.",
                "parameters": [limit, after],
                "responses": {
                    "200": json_response("One page of orders.", "OrderPage", page),
                    "422": invalid(
                        "`limit` is out of range or `after` is not an order id.",
                        "limit must be an integer in 1..1000",
                    ),
                    "503": unavailable_read(),
                },
            }
        },
    }


def admin_paths() -> Json:
    return {
        "/books/{id}": {
            "patch": {
                "operationId": "updateBook",
                "tags": ["admin"],
                "summary": "Change a book's cost or stock",
                "description": "Sets `cost` and/or adds `stock_delta` to the stock. "
                "`stock_delta: 0` changes nothing. JSON only. Executed at most once per "
                "`Idempotency-Key`: a retry with the same key gets the first answer, even "
                "across a failover.",
                "security": [{"admin": []}],
                "parameters": [book_id_parameter(), idempotency_key_parameter("update")],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": schema_ref("BookPatch"),
                            "example": {"stock_delta": 5},
                        }
                    },
                },
                "responses": {
                    "200": replayable(
                        json_response(
                            "The updated book (or the stored answer of an earlier update "
                            "with the same key).",
                            "BookData",
                            {"data": example_book()},
                        )
                    ),
                    "401": unauthorized_response(),
                    "404": error_response("No book has this id.", ("not_found",)),
                    "409": error_response("The stock would go below 0.", ("out_of_stock",)),
                    "413": too_large_response(),
                    "415": error_response(
                        "A non-empty body that is not JSON.", ("unsupported_media_type",)
                    ),
                    "422": error_response(
                        "Bad id, body (`{}` or none, negative cost, more than 2 decimals...) "
                        "or key; or the key was used for another request.",
                        ("invalid_request", "idempotency_key_reused"),
                    ),
                    "503": error_response(
                        "No primary can take the write now; retry with the same key.",
                        ("unavailable",),
                        retry_after=True,
                    ),
                },
            }
        }
    }


def membership_paths() -> Json:
    """docs/contract.md §2's admin routes for membership at runtime (`frontend/membership.py`)."""
    return {
        "/admin/replicas": {"post": add_replica_operation()},
        "/admin/replicas/{name}": {"delete": remove_replica_operation()},
        "/admin/switchover": {"post": switchover_operation()},
    }


def membership_operation(operation_id: str, summary: str, description: str) -> Json:
    return {
        "operationId": operation_id,
        "tags": ["membership"],
        "summary": summary,
        "description": description,
        "security": [{"admin": []}],
    }


def unauthorized_response() -> Json:
    return error_response("Missing or wrong admin token.", ("unauthorized",))


def too_large_response() -> Json:
    return error_response("The body exceeds 64 KiB.", ("payload_too_large",))


def add_replica_operation() -> Json:
    added = {"data": {**example_replica("catalog-3", 8006), "state": "catching_up"}}
    operation = membership_operation(
        "addReplica",
        "Add a replica to a service",
        "Starts a new replica under `bazar up` or, with `url`, registers one started "
        "elsewhere with `bazar serve`. It is answered as `catching_up` and turns `in_sync` "
        "by itself (watch `/cluster`).",
    )
    operation["requestBody"] = json_request("ReplicaAdd", {"service": "catalog"})
    operation["responses"] = {
        "202": json_response("The new replica, catching up.", "ReplicaData", added),
        "401": unauthorized_response(),
        "409": error_response(
            "The service already has `[limits] replicas_max` replicas (default 9); nothing "
            "was started.",
            ("too_many_replicas",),
        ),
        "413": too_large_response(),
        "422": invalid(
            "Bad body, or no new replica of the service answers at `url`.",
            "url must be http://HOST:PORT",
        ),
        "503": error_response(
            "The replica cannot be started now.", ("unavailable",), retry_after=True
        ),
    }
    return operation


def remove_replica_operation() -> Json:
    name = parameter(
        "name", "path", "The replica's name, as `/cluster` lists it.", {"type": "string"}
    )
    name["example"] = "catalog-2"
    tier = {"data": example_tier("catalog", (8003, 8004))}
    operation = membership_operation(
        "removeReplica",
        "Remove a replica",
        "Moves the primary role first if it has it; answers once the view without it is "
        "installed and the process (if `bazar up` runs it) stopped.",
    )
    operation["parameters"] = [name]
    operation["responses"] = {
        "200": json_response("The service's replicas now.", "TierData", tier),
        "401": unauthorized_response(),
        "404": error_response("No replica has this name.", ("not_found",)),
        "409": error_response("It is the only in-sync replica of its service.", ("last_replica",)),
        "503": error_response("Not done in time.", ("unavailable",), retry_after=True),
    }
    return operation


def switchover_operation() -> Json:
    tier = {"data": example_tier("catalog", (8003, 8004))}
    operation = membership_operation(
        "switchover",
        "Move a service's primary role",
        "To `to`, or (`to` null or absent) to the best in-sync backup. Writes are held "
        "meanwhile, not failed.",
    )
    operation["requestBody"] = json_request("Switchover", {"service": "catalog", "to": None})
    operation["responses"] = {
        "200": json_response("The service's replicas, with the new primary.", "TierData", tier),
        "401": unauthorized_response(),
        "404": error_response("The service has no replica `to`.", ("not_found",)),
        "409": error_response(
            "The target is not an in-sync backup (or there is none).", ("not_in_sync",)
        ),
        "413": too_large_response(),
        "422": invalid("Bad body.", "bad Switchover: Object missing required field"),
        "503": error_response("Not done in time.", ("unavailable",), retry_after=True),
    }
    return operation


def json_request(schema: str, example: object) -> Json:
    content = {"application/json": {"schema": schema_ref(schema), "example": example}}
    return {"required": True, "content": content}


def operation_paths() -> Json:
    return {
        "/health": {
            "get": {
                "operationId": "getHealth",
                "tags": ["operations"],
                "summary": "Can the store serve reads and writes?",
                "responses": {
                    "200": json_response("Healthy.", "HealthData", {"data": {"status": "ok"}}),
                    "503": error_response(
                        "Not able to serve; the message says why.", ("unavailable",)
                    ),
                },
            }
        },
        "/cluster": {
            "get": {
                "operationId": "getCluster",
                "tags": ["operations"],
                "summary": "The replicas, their roles and the cache",
                "description": "For each tier: the epoch, the primary and every replica's role, "
                "state and log position; and the front end's cache counters.",
                "responses": {
                    "200": json_response("The cluster view.", "ClusterData", example_cluster())
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "tags": ["operations"],
                "summary": "Prometheus metrics",
                "responses": {
                    "200": text_response(
                        "Prometheus text exposition format.",
                        "text/plain",
                        "# TYPE bazar_requests_total counter\n",
                    )
                },
            }
        },
    }


def page_paths() -> Json:
    document: Json = {
        "description": "This OpenAPI 3.1 document (not wrapped in `data`).",
        "headers": {"X-Request-Id": header_ref("X-Request-Id")},
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    return {
        "/openapi.json": {
            "get": {
                "operationId": "getOpenapi",
                "tags": ["pages"],
                "summary": "This API description",
                "responses": {"200": document},
            }
        },
        "/docs": {
            "get": {
                "operationId": "getDocs",
                "tags": ["pages"],
                "summary": "API documentation page (works offline)",
                "responses": {
                    "200": text_response("An HTML page.", "text/html", "<!doctype html>")
                },
            }
        },
        "/": {
            "get": {
                "operationId": "getStorefront",
                "tags": ["pages"],
                "summary": "Storefront and live cluster view",
                "responses": {
                    "200": text_response("An HTML page.", "text/html", "<!doctype html>")
                },
            }
        },
    }
