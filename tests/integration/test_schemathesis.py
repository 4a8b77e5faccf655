"""schemathesis against the live front end: every answer to a generated request is documented.

Goal: `/openapi.json` tells the truth about the server. No generated request, valid or not,
gets a 5xx; every status, content type, header and body the server sends is one the document
lists for that operation; a request the document calls valid is accepted (2xx, or what a
valid request can meet: 404 for an unknown book, 409 for a sold-out one), and one it calls
invalid is refused with a 4xx (`CHECKS`).

Method: a real 2+2 cluster; the schema is loaded from the front end's own `/openapi.json`, and
schemathesis 4.32.5's engine (what `st run` runs: examples, coverage, fuzzing and stateful
phases) runs against it, seeded and derandomized (`SEED`), with `EXAMPLES_PER_OPERATION`
fuzzed cases per operation (a few hundred cases in all) and the admin token for PATCH
/books/{id}. Purchases sell books out as the run goes on; later cases then get 409
`out_of_stock`, which is documented. The generated requests are the same on every run, but
the server's answers carry fresh order ids, which the stateful phase follows, so that phase
may vary a little; a failure prints the requests (curl) that reproduce it. (The engine, not
`schemathesis.pytest.from_fixture`: that integration reads `Node._nodeid`, which pytest 9.2
no longer has.)

Three refusals of schema-valid requests are the contract (docs/contract.md §2, §8) and no JSON
Schema can express them, so the run's configuration names them: `SpecRefusals` replaces the built-in
`positive_data_acceptance`, and excuses a 422 only after checking that it is one of these,
never by status alone; everything else goes to the built-in check unchanged. The server is
not loosened for them.
- An integer written with a fraction (`{"stock_delta": -40.0}`): JSON Schema counts `-40.0`
  as an integer, docs/contract.md §8 deliberately wants the JSON integer syntax (`2.0` ->
  422).
- An `Idempotency-Key` this run already used for another request (a purchase of another
  book or quantity, an update of another book or with other values, a purchase for an
  update or the reverse): 422 `idempotency_key_reused` is the key's history, not the
  request's shape.
- An `after` cursor that names no order (GET /orders/{after} is 404): 422 by
  docs/contract.md §8.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from typing import Any
from urllib.parse import quote

import schemathesis
from schemathesis import APIOperation, Case, CheckContext, Response
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.errors import InvalidSchema
from schemathesis.core.result import Ok, Result
from schemathesis.engine import Status, StopReason, events, from_schema
from schemathesis.engine.recorder import ScenarioRecorder

from bazar.testing.cluster import Cluster

AnyCase = Case[APIOperation[Any, Any, Any, Any]]

SEED = 9
EXAMPLES_PER_OPERATION = 20
LOOKUP_TIMEOUT_S = 10
INTEGER_FIELDS = frozenset({"quantity", "item_number", "stock_delta"})
# Each valid request starts or stops a replica process: a few hundred would swamp the machine.
# Switchover is fuzzed (it moves the primary role back and forth, holding writes, failing none).
NOT_FUZZED = ("addReplica", "removeReplica")  # tests/fault/test_membership.py covers them
CHECKS = (
    "not_a_server_error",  # no 5xx
    "status_code_conformance",  # every status documented for its operation
    "content_type_conformance",
    "response_schema_conformance",  # every body matches its documented schema
    "response_headers_conformance",  # e.g. Retry-After on 503
    "negative_data_rejection",  # a request the document calls invalid gets a 4xx
    "missing_required_header",
    "ignored_auth",  # PATCH /books without the admin token is 401
    "unsupported_method",  # 405 with Allow
    "allow_header_conformance",
)


@schemathesis.check
class SpecRefusals:
    """`positive_data_acceptance`, except for the 422s the contract gives valid requests."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.keys: dict[str, Command] = {}  # key -> the request first stored under it

    def after_response(self, ctx: CheckContext, response: Response, case: AnyCase) -> bool | None:
        excuse = self.excuse(case, response)
        self.remember_key(case, response)
        if excuse is not None:
            return None
        result: bool | None = positive_data_acceptance(ctx, response, case)
        return result

    def excuse(self, case: AnyCase, response: Response) -> str | None:
        """Why this 422 to a request is the contract's answer, or None."""
        if response.status_code != 422:
            return None
        code = error_code(response)
        if code == "invalid_request" and integer_written_with_fraction(case.body):
            return "integer written with a fraction"
        if code == "idempotency_key_reused" and self.key_used_for_another_request(case):
            return "Idempotency-Key used for another request"
        if code == "invalid_request" and self.cursor_names_no_order(case):
            return "`after` names no order"
        return None

    def key_used_for_another_request(self, case: AnyCase) -> bool:
        key = idempotency_key(case)
        first = self.keys.get(key) if key is not None else None
        return first is not None and first != command_of(case)

    def remember_key(self, case: AnyCase, response: Response) -> None:
        """A key is stored with the answers that reached the catalog: 200 and out_of_stock
        (an update that changes nothing is a read: it stores nothing)."""
        key = idempotency_key(case)
        command = command_of(case)
        stored = response.status_code == 200 or error_code(response) == "out_of_stock"
        if key is not None and command is not None and command != no_update(command) and stored:
            self.keys.setdefault(key, command)

    def cursor_names_no_order(self, case: AnyCase) -> bool:
        after = (case.query or {}).get("after")
        if case.operation.path != "/orders" or not isinstance(after, str):
            return False
        url = f"{self.base_url}/orders/{quote(after, safe='')}"
        try:
            with urllib.request.urlopen(url, timeout=LOOKUP_TIMEOUT_S):
                return False
        except urllib.error.HTTPError as error:
            with error:
                return error.code == 404


def error_code(response: Response) -> str | None:
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def integer_written_with_fraction(body: object) -> bool:
    if not isinstance(body, dict):
        return False
    return any(isinstance(body.get(name), float) for name in INTEGER_FIELDS)


Command = tuple[str, str, object, object]
"""What a key is stored for: ("purchase", book, quantity, None) or ("update", book,
stock_delta, cost)."""


def command_of(case: AnyCase) -> Command | None:
    """The purchase or update a request asks for, if its body gives integer numbers."""
    if case.operation.path.startswith("/purchase/"):
        return purchase_of(case)
    if case.operation.path.startswith("/books/") and isinstance(case.body, dict):
        delta, cost = case.body.get("stock_delta", 0), case.body.get("cost")
        if not isinstance(delta, int) or isinstance(delta, bool):
            return None
        return "update", book_of((case.path_parameters or {}).get("id")), delta, cost
    return None


def no_update(command: Command) -> Command:
    """The update of `command`'s book that changes nothing."""
    return "update", command[1], 0, None


def purchase_of(case: AnyCase) -> Command | None:
    """A purchase whose body gives an integer quantity."""
    body: Any = case.body if isinstance(case.body, dict) else {}
    quantity = body.get("quantity", body.get("item_number", 1))
    if isinstance(quantity, str) and quantity.isascii() and quantity.isdigit():
        quantity = int(quantity)  # a form field is text
    if not isinstance(quantity, int) or isinstance(quantity, bool):
        return None
    return "purchase", book_of((case.path_parameters or {}).get("id")), quantity, None


def book_of(value: object) -> str:
    """The book a path id names: `01` is 1 (docs/contract.md §8)."""
    text = str(value)
    return str(int(text)) if text.isascii() and text.isdigit() else text


def idempotency_key(case: AnyCase) -> str | None:
    """The key the server reads: HTTP drops spaces and tabs around a header's value."""
    for name, value in (case.headers or {}).items():
        if name.lower() == "idempotency-key" and isinstance(value, str):
            return value.strip(" \t")
    return None


def run_config(cluster: Cluster) -> schemathesis.Config:
    checks: dict[str, object] = {name: {"enabled": True} for name in CHECKS}
    checks[SpecRefusals.__name__] = {"enabled": True, "base_url": cluster.url}
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": cluster.url,
            "generation": {
                "mode": "all",
                "max-examples": EXAMPLES_PER_OPERATION,
                "deterministic": True,
                "database": "none",
            },
            "checks": {"enabled": False, **checks},
            "auth": {"openapi": {"admin": {"bearer": cluster.admin_token}}},
            "operations": [{"include-operation-id": list(NOT_FUZZED), "enabled": False}],
        }
    )


def test_every_answer_of_the_live_front_end_is_documented(cluster: Cluster) -> None:
    url = cluster.url + "/openapi.json"
    schema = schemathesis.openapi.from_url(url, config=run_config(cluster))
    operations = {operation_label(result) for result in schema.get_all_operations()}
    cases: Counter[str] = Counter()
    failures: list[str] = []
    finished: events.EngineFinished | None = None
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for node in event.recorder.cases.values():
                cases[node.value.operation.label] += 1
            failures += scenario_failures(event.recorder)
        elif isinstance(event, events.NonFatalError):
            failures.append(event.info.format())
        elif isinstance(event, events.FatalError):
            failures.append(repr(event.exception))
        elif isinstance(event, events.EngineFinished):
            finished = event
    assert finished is not None
    assert finished.stop_reason == StopReason.COMPLETED, finished.stop_reason
    assert not failures, "\n\n".join(dict.fromkeys(failures))
    assert operations <= set(cases), operations - set(cases)


def operation_label(result: Result[APIOperation[Any, Any, Any, Any], InvalidSchema]) -> str:
    assert isinstance(result, Ok), result
    return result.ok().label


def scenario_failures(recorder: ScenarioRecorder) -> list[str]:
    """Each failed or errored check of a scenario, with the request and the answer."""
    found = []
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.status == Status.SUCCESS:
                continue
            if check.failure_info is None:
                found.append(f"{recorder.label}: {check.name} {check.status}")
                continue
            failure = check.failure_info.failure
            interaction = recorder.interactions.get(case_id)
            answer = interaction.response if interaction is not None else None
            found.append(
                f"{check.name}: {failure.title}\n{failure.message}\n"
                f"{check.failure_info.code_sample}\n-> {describe(answer)}"
            )
    return found


def describe(response: Response | None) -> str:
    if response is None:
        return "no answer"
    return f"{response.status_code} {response.content[:300]!r}"
