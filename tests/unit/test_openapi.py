"""The OpenAPI document and the two HTML pages: complete, self-consistent and offline.

The document is built from the wire Structs, so these tests check what a builder can get wrong:
a missing route or method, a dangling `$ref`, an error without `ErrorBody`, a constraint that
differs from the limits the server enforces, an example the server could never send. The pages
must ship as package data and load nothing from another host (the docs work offline): `/docs`
loads Swagger UI from the vendored, unmodified files of `static/swagger-ui/`.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable, Iterator

import msgspec
import orjson
import pytest

from bazar import request, wire
from bazar.config import LIMITS
from bazar.errors import InvalidRequest
from bazar.frontend import openapi, pages

Json = dict[str, object]

ROUTES: dict[str, set[str]] = {
    "/search/{topic}": {"get"},
    "/info/{id}": {"get"},
    "/info": {"get"},
    "/purchase/{id}": {"put", "post"},
    "/orders/{id}": {"get"},
    "/orders": {"get"},
    "/books/{id}": {"patch"},
    "/admin/replicas": {"post"},
    "/admin/replicas/{name}": {"delete"},
    "/admin/switchover": {"post"},
    "/health": {"get"},
    "/cluster": {"get"},
    "/metrics": {"get"},
    "/openapi.json": {"get"},
    "/docs": {"get"},
    "/": {"get"},
}
ACCEPTED = {("/admin/replicas", "post")}  # docs/contract.md §2: 202, it turns in_sync by itself
HTTP_METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}

RESPONSE_STRUCTS: tuple[type[wire.Struct], ...] = (
    wire.Book,
    wire.Order,
    wire.ErrorBody,
    wire.ErrorDetail,
    wire.BookData,
    wire.BookListData,
    wire.PurchaseData,
    wire.OrderData,
    wire.OrderPage,
    wire.HealthData,
    wire.HealthStatus,
    wire.ClusterData,
    wire.ClusterInfo,
    wire.TierInfo,
    wire.ReplicaInfo,
    wire.CacheInfo,
    wire.TierData,
    wire.ReplicaData,
)

OK_STRUCTS: dict[str, type[wire.Struct]] = {
    struct.__name__: struct
    for struct in (
        wire.BookData,
        wire.BookListData,
        wire.PurchaseData,
        wire.OrderData,
        wire.OrderPage,
        wire.HealthData,
        wire.ClusterData,
        wire.TierData,
        wire.ReplicaData,
    )
}


@pytest.fixture(scope="module")
def document() -> Json:
    # Through JSON and back: the tests see exactly what a client of /openapi.json sees.
    decoded = orjson.loads(openapi.openapi_json())
    assert isinstance(decoded, dict)
    return decoded


def as_dict(value: object) -> Json:
    assert isinstance(value, dict), value
    return value


def operations(document: Json) -> Iterator[tuple[str, str, Json]]:
    for path, item in as_dict(document["paths"]).items():
        for method, operation in as_dict(item).items():
            if method in HTTP_METHODS:
                yield path, method, as_dict(operation)


def parameters(operation: Json) -> list[Json]:
    entries = operation.get("parameters", [])
    assert isinstance(entries, list)
    return [as_dict(entry) for entry in entries]


def success_status(path: str, method: str) -> str:
    return "202" if (path, method) in ACCEPTED else "200"


def walk(node: object) -> Iterator[Json]:
    """Every dict inside a JSON value, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def resolve(document: Json, ref: str) -> object:
    assert ref.startswith("#/"), ref
    node: object = document
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        node = as_dict(node)[key]
    return node


def parameter(operation: Json, name: str) -> Json:
    for entry in parameters(operation):
        if entry["name"] == name:
            return entry
    raise AssertionError(f"no parameter {name}")


def test_document_is_openapi_3_1(document: Json) -> None:
    assert document["openapi"] == "3.1.0"
    info = as_dict(document["info"])
    assert info["title"] == "Bazar"
    assert info["version"]


def test_document_has_every_public_route_with_its_methods(document: Json) -> None:
    paths = as_dict(document["paths"])
    assert set(paths) == set(ROUTES)
    for path, methods in ROUTES.items():
        assert set(as_dict(paths[path])) & HTTP_METHODS == methods, path


def test_every_operation_has_a_unique_id_a_summary_and_one_success(document: Json) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids)) == sum(len(methods) for methods in ROUTES.values())
    for path, method, operation in operations(document):
        assert operation["summary"], (path, method)
        success = {status for status in as_dict(operation["responses"]) if status[0] == "2"}
        assert success == {success_status(path, method)}, (path, method)


def test_every_path_template_variable_is_a_required_path_parameter(document: Json) -> None:
    for path, method, operation in operations(document):
        declared = {
            entry["name"]
            for entry in parameters(operation)
            if entry["in"] == "path" and entry["required"] is True
        }
        assert declared == set(re.findall(r"\{(\w+)\}", path)), (path, method)


def test_every_ref_resolves_to_a_component(document: Json) -> None:
    refs = [node["$ref"] for node in walk(document) if "$ref" in node]
    assert refs
    for ref in refs:
        assert isinstance(ref, str)
        assert ref.startswith("#/components/"), ref
        assert isinstance(resolve(document, ref), dict), ref


def test_every_response_struct_is_a_component(document: Json) -> None:
    schemas = as_dict(as_dict(document["components"])["schemas"])
    request_structs: tuple[type[wire.Struct], ...] = (
        wire.PurchaseBody,
        wire.BookPatch,
        wire.ReplicaAdd,
        wire.Switchover,
    )
    for struct in RESPONSE_STRUCTS + request_structs:
        assert struct.__name__ in schemas, struct.__name__


def test_every_error_response_is_an_error_body(document: Json) -> None:
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, _, operation in operations(document):
        for status, response in as_dict(operation["responses"]).items():
            if int(status) < 400:
                continue
            content = as_dict(as_dict(response)["content"])
            assert as_dict(content["application/json"])["schema"] == error_ref, (path, status)


def test_error_examples_decode_as_error_body_with_a_known_code(document: Json) -> None:
    known = {code for code, _, _ in openapi.ERROR_EXAMPLES}
    for _, _, operation in operations(document):
        for status, response in as_dict(operation["responses"]).items():
            if int(status) < 400:
                continue
            media = as_dict(as_dict(as_dict(response)["content"])["application/json"])
            for name, example in as_dict(media["examples"]).items():
                body = msgspec.json.decode(
                    orjson.dumps(as_dict(example)["value"]), type=wire.ErrorBody
                )
                assert body.error.code == name
                assert name in known


def test_success_examples_decode_as_their_wire_struct(document: Json) -> None:
    checked = set()
    for path, method, operation in operations(document):
        ok = as_dict(as_dict(operation["responses"])[success_status(path, method)])
        media = as_dict(ok["content"]).get("application/json")
        if media is None or "$ref" not in as_dict(as_dict(media)["schema"]):
            continue
        ref = as_dict(as_dict(media)["schema"])["$ref"]
        assert isinstance(ref, str)
        struct = OK_STRUCTS[ref.rsplit("/", 1)[1]]
        msgspec.json.decode(orjson.dumps(as_dict(media)["example"]), type=struct)
        checked.add(path)
    assert {"/info/{id}", "/purchase/{id}", "/orders", "/cluster", "/health"} <= checked
    assert {"/admin/replicas", "/admin/replicas/{name}", "/admin/switchover"} <= checked


def test_parameters_carry_the_limits_the_server_enforces(document: Json) -> None:
    paths = as_dict(document["paths"])
    topic = as_dict(parameter(as_dict(as_dict(paths["/search/{topic}"])["get"]), "topic")["schema"])
    assert (topic["minLength"], topic["maxLength"]) == (1, LIMITS.topic_chars_max)
    book_id = as_dict(parameter(as_dict(as_dict(paths["/info/{id}"])["get"]), "id")["schema"])
    assert (book_id["type"], book_id["minimum"], book_id["maximum"]) == ("integer", 1, 2**63 - 1)
    listing = as_dict(as_dict(paths["/orders"])["get"])
    limit = as_dict(parameter(listing, "limit")["schema"])
    assert (limit["minimum"], limit["maximum"]) == (1, LIMITS.page_limit_max)
    assert limit["default"] == LIMITS.page_limit_default
    assert parameter(listing, "after")["in"] == "query"
    for method in ("put", "post"):
        purchase = as_dict(as_dict(paths["/purchase/{id}"])[method])
        key = parameter(purchase, "Idempotency-Key")
        assert key["in"] == "header"
        key_schema = as_dict(key["schema"])
        assert (key_schema["minLength"], key_schema["maxLength"]) == (1, 255)


def accepts(check: Callable[[], object]) -> bool:
    try:
        check()
    except InvalidRequest:
        return False
    return True


def test_topic_pattern_accepts_exactly_the_topics_the_server_accepts(document: Json) -> None:
    """JSON Schema's `\\S` is ECMA's, not Python's: a topic of `\\x1f` matched it, and the
    server refused it as blank. The pattern must agree with the server on every character."""
    operation = as_dict(as_dict(as_dict(document["paths"])["/search/{topic}"])["get"])
    pattern = as_dict(parameter(operation, "topic")["schema"])["pattern"]
    assert isinstance(pattern, str)
    assert pattern.isascii()  # escapes only: one reading for ECMA and Python regexes
    everything = "".join(chr(code) for code in range(sys.maxunicode + 1) if not is_surrogate(code))
    blank = set(re.sub(pattern, "", everything))  # what the pattern does not match
    assert 0 < len(blank) < 100
    limit = LIMITS.topic_chars_max
    for char in everything:
        try:
            request.search_topic(char, limit)
        except InvalidRequest:
            assert char in blank, hex(ord(char))
        else:
            assert char not in blank, hex(ord(char))


def is_surrogate(code: int) -> bool:
    return 0xD800 <= code <= 0xDFFF


@pytest.mark.parametrize("key", ["a", "a b", "~", " a", "a ", " ", "\t", "é", "a\x7f", "!" * 255])
def test_idempotency_key_pattern_matches_what_reaches_the_server(document: Json, key: str) -> None:
    purchase = as_dict(as_dict(as_dict(document["paths"])["/purchase/{id}"])["post"])
    schema = as_dict(parameter(purchase, "Idempotency-Key")["schema"])
    assert isinstance(schema["pattern"], str)
    documented = re.search(schema["pattern"], key) is not None
    # HTTP strips spaces and tabs around a header value before the server reads it.
    received = key.strip(" \t")
    limit = LIMITS.idempotency_key_chars_max
    server = accepts(lambda: request.idempotency_key({"idempotency-key": received}, limit))
    assert documented == (server and received == key)


def test_order_examples_have_the_shape_of_real_order_ids(document: Json) -> None:
    paths = as_dict(document["paths"])
    example = parameter(as_dict(as_dict(paths["/orders/{id}"])["get"]), "id")["example"]
    assert isinstance(example, str)
    assert re.fullmatch(r"[0-9a-f]{32}", example)  # uuid4().hex, as the order service makes
    assert openapi.example_order()["id"] == example


def test_cost_maximum_is_the_largest_cost_the_server_takes(document: Json) -> None:
    schemas = as_dict(as_dict(document["components"])["schemas"])
    patch_cost = as_dict(as_dict(as_dict(schemas["BookPatch"])["properties"])["cost"])
    book_cost = as_dict(as_dict(as_dict(schemas["Book"])["properties"])["cost"])
    assert patch_cost["maximum"] == book_cost["maximum"]
    maximum = patch_cost["maximum"]
    assert isinstance(maximum, int)
    delta = LIMITS.stock_delta_abs_max

    def command(cost: float) -> object:
        return request.patch_command(1, orjson.dumps({"cost": cost}), "application/json", delta)

    assert accepts(lambda: command(maximum))
    assert accepts(lambda: command(maximum - 0.01))
    assert not accepts(lambda: command(maximum + 0.01))


def test_purchase_takes_json_or_form_and_answers_every_documented_status(document: Json) -> None:
    item = as_dict(as_dict(document["paths"])["/purchase/{id}"])
    for method in ("put", "post"):
        operation = as_dict(item[method])
        content = as_dict(as_dict(operation["requestBody"])["content"])
        assert set(content) == {"application/json", "application/x-www-form-urlencoded"}
        assert as_dict(content["application/json"])["schema"] == {
            "$ref": "#/components/schemas/PurchaseBody"
        }
        responses = as_dict(operation["responses"])
        assert set(responses) >= {"200", "404", "409", "413", "415", "422", "503"}
        conflict = as_dict(as_dict(as_dict(responses["409"])["content"])["application/json"])
        assert set(as_dict(conflict["examples"])) == {"out_of_stock", "idempotency_key_in_use"}
        assert "Retry-After" in as_dict(as_dict(responses["503"])["headers"])


def test_quantity_is_limited_in_the_purchase_body(document: Json) -> None:
    schemas = as_dict(as_dict(document["components"])["schemas"])
    body = as_dict(schemas["PurchaseBody"])
    for field in ("quantity", "item_number"):
        quantity = as_dict(as_dict(body["properties"])[field])
        assert (quantity["minimum"], quantity["maximum"]) == (1, LIMITS.quantity_max)
    # Not both: no property but these two, and at most one of them.
    assert set(as_dict(body["properties"])) == {"item_number", "quantity"}
    assert body["additionalProperties"] is False
    assert body["maxProperties"] == 1
    assert "required" not in body or body["required"] == []


def test_patch_book_requires_the_admin_bearer_token(document: Json) -> None:
    operation = as_dict(as_dict(as_dict(document["paths"])["/books/{id}"])["patch"])
    assert operation["security"] == [{"admin": []}]
    schemes = as_dict(as_dict(document["components"])["securitySchemes"])
    assert schemes["admin"] == {**as_dict(schemes["admin"]), "type": "http", "scheme": "bearer"}
    assert set(as_dict(operation["responses"])) >= {"200", "401", "404", "409", "415", "422"}
    content = as_dict(as_dict(operation["requestBody"])["content"])
    assert set(content) == {"application/json"}


def test_membership_routes_require_the_admin_token(document: Json) -> None:
    paths = as_dict(document["paths"])
    for path, methods in ROUTES.items():
        if not path.startswith("/admin/"):
            continue
        for method in methods:
            operation = as_dict(as_dict(paths[path])[method])
            assert operation["security"] == [{"admin": []}], path
            assert "401" in as_dict(operation["responses"]), path


def test_pages_and_metrics_are_not_json(document: Json) -> None:
    paths = as_dict(document["paths"])
    expected = {"/": "text/html", "/docs": "text/html", "/metrics": "text/plain"}
    for path, media_type in expected.items():
        ok = as_dict(as_dict(as_dict(as_dict(paths[path])["get"])["responses"])["200"])
        assert set(as_dict(ok["content"])) == {media_type}


def test_document_is_built_afresh_each_time() -> None:
    first = openapi.openapi_document()
    as_dict(first["paths"]).clear()
    assert openapi.openapi_document()["paths"]
    assert orjson.loads(openapi.openapi_json()) == openapi.openapi_document()


@pytest.mark.parametrize("name", pages.PAGE_NAMES)
def test_page_ships_as_package_data_and_loads_nothing_from_other_hosts(
    name: pages.PageName,
) -> None:
    html = pages.page(name).decode("utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "http://" not in html
    assert "https://" not in html
    # Protocol-relative URLs (`//cdn...`) in src/href would reach another host too.
    assert not re.search(r"""(?:src|href)\s*=\s*["']//""", html)


@pytest.mark.parametrize(("name", "route"), [("docs", "/openapi.json"), ("index", "/cluster")])
def test_page_calls_its_api_route(name: pages.PageName, route: str) -> None:
    assert f'"{route}"' in pages.page(name).decode("utf-8")


def test_storefront_has_stable_test_ids() -> None:
    html = pages.page("index").decode("utf-8")
    for test_id in ("search-input", "book-row", "buy-button", "quantity-input", "cluster-view"):
        assert f'"{test_id}"' in html, test_id
    for route in ('"/info"', '"/search/"', '"/purchase/"', '"Idempotency-Key"'):
        assert route in html, route


SWAGGER_README = "swagger-ui/README.md"


def vendored_readme() -> str:
    return (pages.static_root() / SWAGGER_README).read_text(encoding="utf-8")


def static_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', html)


def test_vendored_swagger_ui_files_are_the_pinned_package_unchanged() -> None:
    rows = re.findall(r"^\| `([^`]+)` \| `([0-9a-f]{64})` \|$", vendored_readme(), re.MULTILINE)
    assert {name for name, _ in rows} >= {"swagger-ui-bundle.js", "swagger-ui.css", "LICENSE"}
    directory = pages.static_root() / "swagger-ui"
    listed = {name for name, _ in rows}
    assert {entry.name for entry in directory.iterdir()} == listed | {"README.md"}
    for name, sha256 in rows:
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == sha256, name


def test_docs_page_is_swagger_ui_from_the_vendored_files_at_their_version() -> None:
    html = pages.page("docs").decode("utf-8")
    version = re.search(r"`swagger-ui-dist` \(npm\), version `([0-9.]+)`", vendored_readme())
    assert version is not None
    urls = static_urls(html)
    assert set(urls) >= {
        f"/static/swagger-ui/swagger-ui-bundle.js?v={version[1]}",
        f"/static/swagger-ui/swagger-ui.css?v={version[1]}",
    }
    served = pages.assets()
    for url in urls:
        path, _, query = url.removeprefix("/static/").partition("?")
        assert query == f"v={version[1]}", url  # the long cache lifetime needs the version
        assert path in served, url
    assert "SwaggerUIBundle(" in html
    assert "tryItOutEnabled: true" in html
    assert "validatorUrl: null" in html  # no call to validator.swagger.io


def test_static_serves_scripts_styles_and_images_only_with_their_types() -> None:
    served = pages.assets()
    assert served["swagger-ui/swagger-ui-bundle.js"].media_type.startswith("text/javascript")
    assert served["swagger-ui/swagger-ui.css"].media_type.startswith("text/css")
    assert served["swagger-ui/favicon-32x32.png"].media_type == "image/png"
    for path in served:
        assert pages.suffix(path) in pages.ASSET_TYPES, path
    for private in ("docs.html", "index.html", SWAGGER_README, "swagger-ui/LICENSE"):
        assert private not in served, private
