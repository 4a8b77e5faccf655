"""The command-line client and the bench runner, against a tiny scripted HTTP server.

The fake server is the stdlib's, in a thread, on a random loopback port: it answers each
route from a script (a list of replies, the last one repeated) and records every request,
so the tests can check exit statuses and that retries reuse one Idempotency-Key, without
sleeping or timing anything (`buy` gets a recording `sleep`; the membership commands get a
fake clock that only their `sleep` moves).
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest
from rich.console import Console

from bazar import client
from bazar.bench import command as bench
from bazar.bench.scenarios import RESTOCK
from bazar.wire import Book

BOOK = {
    "id": 1,
    "title": "How to get a good grade in DOS in 40 minutes a day",
    "topic": "Distributed Systems",
    "stock": 6,
    "cost": 10,
}
ORDER = {
    "id": "ord-1",
    "book_id": 1,
    "quantity": 1,
    "unit_cost": 10,
    "total_cost": 10,
    "status": "completed",
    "created_at": "2024-01-01T00:00:00Z",
}
PURCHASED = {"data": "Purchase done", "order": ORDER}
REPLICA = {
    "name": "catalog-1",
    "url": "http://127.0.0.1:8003",
    "role": "primary",
    "state": "in_sync",
    "pid": 42,
    "last_seq": 7,
    "commit_seq": 7,
}
TIER = {"epoch": 1, "primary": "catalog-1", "replicas": [REPLICA]}
CACHE = {
    "enabled": True,
    "entries": 3,
    "hits": 9,
    "misses": 1,
    "invalidations": 2,
    "rejected_fills": 1,
}
CLUSTER = {"data": {"catalog": TIER, "order": {**TIER, "primary": "order-1"}, "cache": CACHE}}


@dataclass(frozen=True)
class Canned:
    status: int
    body: object
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0  # before answering: a front end slower than the client's deadline


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def error(status: int, code: str, *headers: tuple[str, str]) -> Canned:
    return Canned(status, {"error": {"code": code, "message": f"{code} says the server"}}, headers)


class FakeServer(ThreadingHTTPServer):
    """Answers `(method, path)` from `script`; records every request in `seen`."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.script: dict[tuple[str, str], list[Canned]] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def on(self, method: str, path: str, *replies: Canned) -> None:
        self.script[(method, path)] = list(replies)

    def next_reply(self, seen: Seen) -> Canned:
        with self.lock:
            self.seen.append(seen)
            replies = self.script.get((seen.method, seen.path))
            if not replies:
                return error(404, "not_found")
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def requests(self, method: str) -> list[Seen]:
        with self.lock:
            return [seen for seen in self.seen if seen.method == method]


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real front end
    timeout = 5  # an idle keep-alive connection cannot hold the server open forever
    disable_nagle_algorithm = True  # headers and body go in two writes

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        canned = cast(FakeServer, self.server).next_reply(
            Seen(self.command, self.path, headers, body)
        )
        if canned.delay_s:
            time.sleep(canned.delay_s)
            self.close_connection = True  # the client has given up and gone
            return
        payload = json.dumps(canned.body).encode()
        self.send_response(canned.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in canned.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = answer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence: the test output is for the tests."""


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nobody listens on (the port was just free)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (200, None, 0),
        (404, "not_found", 1),
        (409, "out_of_stock", 1),
        (401, "unauthorized", 1),
        (422, "invalid_request", 2),
        (422, "idempotency_key_reused", 2),
        (413, "payload_too_large", 2),
        (415, "unsupported_media_type", 2),
        (409, "idempotency_key_in_use", 3),
        (503, "unavailable", 3),
        (500, "internal", 3),
    ],
)
def test_exit_status_follows_spec(status: int, code: str | None, expected: int) -> None:
    assert client.exit_status(status, code) == expected


def test_error_of_reads_the_error_body_or_falls_back_to_text() -> None:
    body = json.dumps({"error": {"code": "not_found", "message": "no book 9"}}).encode()
    assert client.error_of(client.Reply(404, body, {})) == ("not_found", "no book 9")
    assert client.error_of(client.Reply(502, b"<html>bad gateway</html>", {})) == (
        "http_502",
        "<html>bad gateway</html>",
    )
    assert client.error_of(client.Reply(500, b"", {})) == ("http_500", "no error body")


def test_retry_delay_honours_retry_after_within_the_failover_window() -> None:
    assert client.retry_delay(0, None) == client.BACKOFF_S[0]
    assert client.retry_delay(99, None) == client.BACKOFF_S[-1]
    assert client.retry_delay(0, 1.0) == 1.0
    assert client.retry_delay(0, 60.0) == client.MAX_RETRY_AFTER_S
    assert client.Reply(503, b"", {"retry-after": "1"}).retry_after_s == 1.0
    assert client.Reply(503, b"", {"retry-after": "soon"}).retry_after_s is None


@pytest.mark.parametrize("url", ["127.0.0.1:8002", "ftp://host/", "http://", ""])
def test_base_url_rejects_what_is_not_http(url: str) -> None:
    with pytest.raises(client.UsageError):
        client.base_url(url)


def test_base_url_strips_the_trailing_slash() -> None:
    assert client.base_url(" http://127.0.0.1:8002/ ") == "http://127.0.0.1:8002"


def test_a_book_is_formatted_with_its_cost_and_literal_title() -> None:
    assert client.format_cost(12.5) == "$12.50"
    book = Book(id=3, title="Xen [bold]and[/] the Art", topic="Undergrad", stock=0, cost=12.5)
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    console.print(client.book_table([book]))
    console.print(client.book_panel(book))
    text = out.getvalue()
    assert text.count("Xen [bold]and[/] the Art") == 2
    assert "$12.50" in text
    assert "out of stock" in text


# ---------------------------------------------------------------- search, info, status


def test_search_prints_a_table_and_encodes_the_topic(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.on("GET", "/search/distributed%20systems%2Fx", Canned(200, {"data": [BOOK]}))
    assert client.search_command(fake.url, "distributed systems/x", as_json=False) == 0
    assert "How to get a good grade" in capsys.readouterr().out


def test_search_json_prints_the_body_as_received(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.on("GET", "/search/nothing", Canned(200, {"data": []}))
    assert client.search_command(fake.url, "nothing", as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == {"data": []}


def test_search_422_is_a_usage_error(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("GET", "/search/%20", error(422, "invalid_request"))
    assert client.search_command(fake.url, " ", as_json=False) == 2
    assert "invalid_request" in capsys.readouterr().err


def test_info_shows_a_book(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on("GET", "/info/1", Canned(200, {"data": BOOK}))
    assert client.info_command(fake.url, "1", as_json=False) == 0
    out = capsys.readouterr().out
    assert "How to get a good grade" in out
    assert "$10.00" in out


@pytest.mark.parametrize(
    ("book_id", "path", "canned", "expected"),
    [
        ("99", "/info/99", error(404, "not_found"), 1),
        ("abc", "/info/abc", error(422, "invalid_request"), 2),
        ("1", "/info/1", error(503, "unavailable", ("Retry-After", "1")), 3),
    ],
)
def test_info_failures_map_to_exit_statuses(
    fake: FakeServer,
    capsys: pytest.CaptureFixture[str],
    book_id: str,
    path: str,
    canned: Canned,
    expected: int,
) -> None:
    fake.on("GET", path, canned)
    assert client.info_command(fake.url, book_id, as_json=True) == expected
    captured = capsys.readouterr()
    assert json.loads(captured.out) == canned.body  # --json: the whole body, errors included
    assert "says the server" in captured.err


def test_info_unreachable_is_exit_3(dead_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert client.info_command(dead_url, "1", as_json=True) == 3
    captured = capsys.readouterr()
    assert json.loads(captured.out)["error"]["code"] == "unavailable"
    assert "cannot reach" in captured.err


def test_usage_errors_are_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert client.info_command("localhost:8002", "1", as_json=False) == 2
    assert client.info_command("http://127.0.0.1:1", "", as_json=False) == 2
    assert capsys.readouterr().err.count("usage") == 2


def test_status_shows_each_tier_and_the_cache(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.on("GET", "/cluster", Canned(200, CLUSTER))
    assert client.status_command(fake.url, as_json=False) == 0
    out = capsys.readouterr().out
    assert "catalog: epoch 1, primary catalog-1" in out
    assert "order: epoch 1, primary order-1" in out
    assert "90.0 %" in out


def test_status_with_an_unexpected_body_is_reported(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.on("GET", "/cluster", Canned(200, {"data": {"catalog": "?"}}))
    assert client.status_command(fake.url, as_json=False) == 3
    assert "unexpected response" in capsys.readouterr().err


# ---------------------------------------------------------------- buy


def test_buy_retries_503_with_the_same_key(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    unavailable = error(503, "unavailable", ("Retry-After", "0"))
    fake.on("POST", "/purchase/1", unavailable, unavailable, Canned(200, PURCHASED))
    fake.on("GET", "/info/1", Canned(200, {"data": BOOK}))
    sleeps = Sleeps()
    status = client.buy_command(
        fake.url, "1", quantity=1, idempotency_key=None, as_json=False, sleep=sleeps
    )
    assert status == 0
    posts = fake.requests("POST")
    keys = {post.headers["idempotency-key"] for post in posts}
    assert len(posts) == 3
    assert len(keys) == 1
    assert keys.pop()
    assert sleeps.delays == [0.0, 0.0]
    out = capsys.readouterr().out
    assert f"bought book {BOOK['title']}\n" in out
    assert "ord-1" in out


def test_buy_sends_the_given_key_and_quantity(fake: FakeServer) -> None:
    fake.on("POST", "/purchase/2", Canned(200, {**PURCHASED, "order": {**ORDER, "book_id": 2}}))
    status = client.buy_command(fake.url, "2", quantity=3, idempotency_key="k-1", as_json=True)
    assert status == 0
    (post,) = fake.requests("POST")
    assert post.headers["idempotency-key"] == "k-1"
    assert post.headers["content-type"] == "application/json"
    assert json.loads(post.body) == {"quantity": 3}
    assert fake.requests("GET") == []  # --json prints the body; no title lookup


def test_buy_out_of_stock_is_definite_and_not_retried(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.on("POST", "/purchase/4", error(409, "out_of_stock"))
    sleeps = Sleeps()
    status = client.buy_command(
        fake.url, "4", quantity=1, idempotency_key=None, as_json=False, sleep=sleeps
    )
    assert status == 1
    assert len(fake.requests("POST")) == 1
    assert sleeps.delays == []
    assert "out_of_stock" in capsys.readouterr().err


def test_buy_gives_up_after_bounded_503s_and_prints_the_key(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.on("POST", "/purchase/1", error(503, "unavailable"))
    sleeps = Sleeps()
    status = client.buy_command(
        fake.url, "1", quantity=1, idempotency_key="again", as_json=False, sleep=sleeps
    )
    assert status == 3
    assert len(fake.requests("POST")) == client.BUY_ATTEMPTS
    assert sleeps.delays == list(client.BACKOFF_S)
    assert "--idempotency-key again" in capsys.readouterr().err


def test_buy_unreachable_retries_then_exits_3(
    dead_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sleeps = Sleeps()
    status = client.buy_command(
        dead_url, "1", quantity=1, idempotency_key="k-2", as_json=False, sleep=sleeps
    )
    assert status == 3
    assert len(sleeps.delays) == client.BUY_ATTEMPTS - 1
    assert "--idempotency-key k-2" in capsys.readouterr().err


def test_buy_falls_back_to_the_id_when_the_title_is_unknown(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.on("POST", "/purchase/1", Canned(200, PURCHASED, (("Idempotent-Replayed", "true"),)))
    status = client.buy_command(fake.url, "1", quantity=1, idempotency_key="k", as_json=False)
    assert status == 0
    out = capsys.readouterr().out
    assert "bought book #1\n" in out
    assert "replayed" in out


# ---------------------------------------------------------------- bench


@pytest.mark.parametrize(
    ("scenarios", "concurrency", "duration", "token"),
    [
        (["purchase"], [1], 1.0, None),
        (["nope"], [1], 1.0, None),
        (["info"], [0], 1.0, None),
        (["info"], [1], 0.0, None),
        ([], [1], 1.0, None),
    ],
)
def test_bench_usage_errors_are_exit_2(
    scenarios: list[str], concurrency: list[int], duration: float, token: str | None
) -> None:
    status = bench.bench_command(
        "http://127.0.0.1:1",
        scenarios=scenarios,
        concurrency=concurrency,
        duration_s=duration,
        admin_token=token,
        output=None,
    )
    assert status == 2


def test_bench_unreachable_is_exit_3(dead_url: str) -> None:
    status = bench.bench_command(
        dead_url, scenarios=["info"], concurrency=[1], duration_s=1.0, admin_token=None, output=None
    )
    assert status == 3


def test_bench_measures_and_writes_json(fake: FakeServer, tmp_path: Path) -> None:
    fake.on("GET", "/info/1", Canned(200, {"data": BOOK}))
    fake.on("PATCH", "/books/1", Canned(200, {"data": BOOK}))
    fake.on("POST", "/purchase/1", Canned(200, PURCHASED), error(409, "out_of_stock"))
    output = tmp_path / "out" / "bench.json"
    status = bench.bench_command(
        fake.url,
        scenarios=["info", "purchase"],
        concurrency=[2],
        duration_s=0.2,
        admin_token="tok",
        output=str(output),
        warmup_s=0.0,
    )
    assert status == 0
    rows = json.loads(output.read_text())["results"]
    pairs = [(row["scenario"], row["concurrency"]) for row in rows]
    assert pairs == [("info-hit", 2), ("purchase", 2)]
    info, purchase = rows
    assert info["requests"] > 0
    assert info["non_2xx"] == 0
    assert purchase["non_2xx"] == purchase["statuses"]["409"] == purchase["requests"] - 1
    for key in ("throughput_rps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "timestamp"):
        assert key in info
    (patch,) = fake.requests("PATCH")
    assert patch.headers["authorization"] == "Bearer tok"
    assert json.loads(patch.body) == {"stock_delta": RESTOCK}
    keys = [post.headers["idempotency-key"] for post in fake.requests("POST")]
    assert len(keys) == len(set(keys)) == purchase["requests"]


# ---------------------------------------------------------------- membership (admin)

TOKEN = "admin-token"
NEW = {**REPLICA, "name": "catalog-3", "url": "http://127.0.0.1:8006", "role": "backup"}
CATCHING_UP = {**NEW, "state": "catching_up", "last_seq": 2, "commit_seq": 2}
VIEW = {"epoch": 4, "primary": "catalog-2", "replicas": [REPLICA]}


def cluster_with(*replicas: dict[str, object]) -> Canned:
    catalog = {**TIER, "replicas": [REPLICA, *replicas]}
    return Canned(200, {"data": {**CLUSTER["data"], "catalog": catalog}})


class Clock:
    """A monotonic clock that only `sleep` moves: deadlines without waiting for them."""

    def __init__(self) -> None:
        self.now_s = 100.0
        self.delays: list[float] = []

    def now(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.now_s += seconds


def add(url: str, clock: Clock, **options: Any) -> int:
    arguments: dict[str, Any] = {
        "replica_url": None,
        "token": TOKEN,
        "timeout_s": 60.0,
        "as_json": False,
        **options,
    }
    return client.replica_add_command(url, "catalog", sleep=clock.sleep, now=clock.now, **arguments)


def remove(url: str, name: str = "catalog-2", **options: Any) -> int:
    arguments: dict[str, Any] = {"token": TOKEN, "timeout_s": 60.0, "as_json": False, **options}
    return client.replica_remove_command(url, "catalog", name, **arguments)


def switchover(url: str, to: str | None = None, **options: Any) -> int:
    arguments: dict[str, Any] = {"token": TOKEN, "timeout_s": 60.0, "as_json": False, **options}
    return client.switchover_command(url, "catalog", to=to, **arguments)


def test_add_waits_until_the_new_replica_is_in_sync_and_prints_its_name(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.on("POST", "/admin/replicas", Canned(202, {"data": CATCHING_UP}))
    fake.on("GET", "/cluster", cluster_with(), cluster_with(CATCHING_UP), cluster_with(NEW))
    clock = Clock()
    assert add(fake.url, clock) == 0
    assert capsys.readouterr().out == "catalog-3\n"
    (post,) = fake.requests("POST")
    assert post.headers["authorization"] == f"Bearer {TOKEN}"
    assert post.headers["content-type"] == "application/json"
    assert json.loads(post.body) == {"service": "catalog"}
    assert len(fake.requests("GET")) == 3
    assert clock.delays == [client.POLL_S, client.POLL_S]


def test_add_registers_a_replica_started_elsewhere(fake: FakeServer) -> None:
    fake.on("POST", "/admin/replicas", Canned(202, {"data": CATCHING_UP}))
    fake.on("GET", "/cluster", cluster_with(NEW))
    assert add(fake.url, Clock(), replica_url="http://10.0.0.7:8006/") == 0
    (post,) = fake.requests("POST")
    assert json.loads(post.body) == {"service": "catalog", "url": "http://10.0.0.7:8006"}


def test_add_json_prints_the_replica_once_in_sync(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.on("POST", "/admin/replicas", Canned(202, {"data": CATCHING_UP}))
    fake.on("GET", "/cluster", cluster_with(NEW))
    assert add(fake.url, Clock(), as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == {"data": NEW}


def test_add_keeps_waiting_through_an_unavailable_front_end(fake: FakeServer) -> None:
    down = error(503, "unavailable")
    fake.on("POST", "/admin/replicas", Canned(202, {"data": CATCHING_UP}))
    fake.on("GET", "/cluster", down, Canned(200, {"data": "?"}), cluster_with(NEW))
    assert add(fake.url, Clock()) == 0
    assert len(fake.requests("GET")) == 3


def test_add_not_in_sync_within_the_timeout_is_exit_3(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.on("POST", "/admin/replicas", Canned(202, {"data": CATCHING_UP}))
    fake.on("GET", "/cluster", cluster_with(CATCHING_UP))
    clock = Clock()
    assert add(fake.url, clock, timeout_s=2.0, as_json=True) == 3
    captured = capsys.readouterr()
    failure = json.loads(captured.out)["error"]
    assert failure["code"] == "timeout"
    assert "catalog-3 is not in sync after 2 s (last seen: catching_up)" in failure["message"]
    assert "bazar status" in captured.err
    assert clock.now_s == 102.0  # gave up at the deadline, not before and not long after
    assert len(fake.requests("GET")) == int(2.0 / client.POLL_S)


def test_add_with_an_unexpected_answer_is_exit_3(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.on("POST", "/admin/replicas", Canned(202, {"data": {"id": 3}}))
    assert add(fake.url, Clock()) == 3
    assert "unexpected" in capsys.readouterr().err
    assert fake.requests("GET") == []


def test_remove_deletes_the_replica_and_prints_the_new_view(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.on("DELETE", "/admin/replicas/catalog-2", Canned(200, {"data": VIEW}))
    assert remove(fake.url) == 0
    assert (
        capsys.readouterr().out == "removed catalog-2: catalog is at epoch 4, primary catalog-2\n"
    )
    (delete,) = fake.requests("DELETE")
    assert delete.headers["authorization"] == f"Bearer {TOKEN}"
    assert delete.body == b""


@pytest.mark.parametrize("to", [None, "catalog-2"])
def test_switchover_sends_the_target_and_prints_the_new_primary(
    fake: FakeServer, capsys: pytest.CaptureFixture[str], to: str | None
) -> None:
    fake.on("POST", "/admin/switchover", Canned(200, {"data": VIEW}))
    assert switchover(fake.url, to) == 0
    assert capsys.readouterr().out == "catalog: the primary is catalog-2, epoch 4\n"
    (post,) = fake.requests("POST")
    assert json.loads(post.body) == {"service": "catalog", "to": to}


def test_switchover_json_prints_the_whole_body(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.on("POST", "/admin/switchover", Canned(200, {"data": VIEW}))
    assert switchover(fake.url, as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == {"data": VIEW}


MEMBERSHIP_ROUTES = [
    ("add", "POST", "/admin/replicas"),
    ("remove", "DELETE", "/admin/replicas/catalog-2"),
    ("switchover", "POST", "/admin/switchover"),
]


def run_membership(command: str, url: str, **options: Any) -> int:
    if command == "add":
        return add(url, Clock(), **options)
    return remove(url, **options) if command == "remove" else switchover(url, **options)


@pytest.mark.parametrize(("command", "method", "path"), MEMBERSHIP_ROUTES)
@pytest.mark.parametrize(
    ("canned", "expected"),
    [
        (error(404, "not_found"), 1),
        (error(409, "last_replica"), 1),
        (error(409, "not_in_sync"), 1),
        (error(409, "too_many_replicas"), 1),
        (error(401, "unauthorized"), 1),
        (error(422, "invalid_request"), 2),
        (error(503, "unavailable", ("Retry-After", "1")), 3),
    ],
    ids=lambda value: getattr(value, "status", value),
)
def test_membership_refusals_map_to_exit_statuses_and_are_not_retried(
    fake: FakeServer,
    capsys: pytest.CaptureFixture[str],
    command: str,
    method: str,
    path: str,
    canned: Canned,
    expected: int,
) -> None:
    fake.on(method, path, canned)
    assert run_membership(command, fake.url, as_json=True) == expected
    captured = capsys.readouterr()
    assert json.loads(captured.out) == canned.body
    assert "says the server" in captured.err
    assert len(fake.seen) == 1  # one request: no retry, and `add` does not wait after a refusal


@pytest.mark.parametrize("command", ["add", "remove", "switchover"])
def test_membership_unreachable_is_exit_3(
    dead_url: str, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert run_membership(command, dead_url) == 3
    assert "cannot reach" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "method", "path"), MEMBERSHIP_ROUTES)
def test_membership_without_an_answer_in_time_is_exit_3(
    fake: FakeServer,
    capsys: pytest.CaptureFixture[str],
    command: str,
    method: str,
    path: str,
) -> None:
    fake.on(method, path, Canned(200, {"data": VIEW}, delay_s=1.0))
    started = time.monotonic()
    assert run_membership(command, fake.url, timeout_s=0.1) == 3
    assert time.monotonic() - started < 0.9
    assert "bazar status" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["add", "remove", "switchover"])
@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"token": None}, "no admin token"),
        ({"token": ""}, "no admin token"),
        ({"timeout_s": 0.0}, "--timeout"),
    ],
)
def test_membership_usage_errors_send_nothing(
    fake: FakeServer,
    capsys: pytest.CaptureFixture[str],
    command: str,
    options: dict[str, Any],
    complaint: str,
) -> None:
    assert run_membership(command, fake.url, **options) == 2
    assert complaint in capsys.readouterr().err
    assert fake.seen == []


def test_membership_names_must_belong_to_the_service(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert remove(fake.url, "order-1") == 2
    assert switchover(fake.url, "order-2") == 2
    assert add(fake.url, Clock(), replica_url="10.0.0.7:8006") == 2
    assert remove("127.0.0.1:8002") == 2
    assert capsys.readouterr().err.count("usage") == 4
    assert fake.seen == []
