"""The edge of every process (`server.py`), against a real front end started alone with low
limits in its cluster file: half-sent request heads are closed while requests are still
served; a malformed head gets a JSON 400 and an endless one a JSON 431; past the bound on
requests in progress, or on connections, a request is answered 503 `unavailable` with
Retry-After (the front end's peers, with the cluster secret, excepted); and service resumes
once the load is gone.

Method: raw sockets, so that a head can be left half sent and a request held in progress (its
head sent, its body not yet); every wait polls with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from bazar.config import LIMITS, plan_cluster
from bazar.testing.cluster import Serve, free_port, wait_until

HEADER_TIMEOUT_S = 1
CLOSE_DEADLINE_S = HEADER_TIMEOUT_S + 10.0  # generous: the machine is shared
HALF_HEAD = b"GET /info HTTP/1.1\r\nHost: bazar\r\nAccept: applica"
FULL_HEAD = b"GET /openapi.json HTTP/1.1\r\nHost: bazar\r\n\r\n"
BAD_QUANTITY = b'{"quantity": 0}'  # answered 422 at once, without a replica
HELD_PURCHASE = (
    b"POST /purchase/1 HTTP/1.1\r\nHost: bazar\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BAD_QUANTITY)
)


def front_end(data_dir: Path, **limits: int) -> Serve:
    """A front end alone (no replicas: its /health says 503), with these limits."""
    planned = plan_cluster(
        data_dir=data_dir,
        host="127.0.0.1",
        port=free_port(),
        catalog_replicas=1,
        order_replicas=1,
        catalog_file=None,
    )
    cluster = msgspec.structs.replace(planned, limits=msgspec.structs.replace(LIMITS, **limits))
    return Serve(cluster, "frontend")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """Heads within 1 s, at most 4 requests in progress."""
    process = front_end(
        tmp_path_factory.mktemp("edge"),
        header_timeout_s=HEADER_TIMEOUT_S,
        connections_max=256,
        inflight_requests_max=4,
    )
    with process:
        yield process


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """At most 8 connections, idle ones kept a long while (no timer fires during the test)."""
    process = front_end(
        tmp_path_factory.mktemp("crowded"),
        header_timeout_s=60,
        connections_max=8,
        inflight_requests_max=8,
    )
    with process:
        yield process


@contextlib.contextmanager
def connections(process: Serve, count: int, sending: bytes) -> Iterator[list[socket.socket]]:
    """`count` connections to `process`, each having sent `sending`; closed on exit."""
    opened = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", process.port), timeout=10)
            opened.append(sock)
            if sending:
                sock.sendall(sending)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def received_until_closed(sockets: list[socket.socket], deadline_s: float) -> list[bytes]:
    """What each socket received until the server closed it; fails past the deadline."""
    received = {sock: b"" for sock in sockets}
    open_ = set(sockets)
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)

        def all_closed() -> bool:
            for key, _ in selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                received[sock] += data
                if not data:
                    selector.unregister(sock)
                    open_.discard(sock)
            return not open_

        wait_until(all_closed, deadline_s, f"the server closed all {len(sockets)} connections")
    return [received[sock] for sock in sockets]


def response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole response read from `sock` (the answers here all carry Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (h.partition(": ") for h in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, f"closed in the body of {head!r}"
        body += chunk
    return int(status_line.split()[1]), headers, body


def assert_unavailable(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 503, body
    assert headers["content-type"] == "application/json"
    assert headers["retry-after"] == "1"
    assert headers["x-request-id"]
    error = json.loads(body)["error"]
    assert error["code"] == "unavailable"
    assert set(error) == {"code", "message"}


def test_half_sent_heads_are_closed_while_requests_are_still_served(edge: Serve) -> None:
    with (
        connections(edge, 40, HALF_HEAD) as half,
        connections(edge, 5, b"") as silent,
        connections(edge, 5, FULL_HEAD) as kept_alive,
    ):
        for sock in kept_alive:  # one whole request answered, then half of the next one
            assert response(sock)[0] == 200
            sock.sendall(HALF_HEAD)
        assert edge.request("GET", "/openapi.json")[0] == 200
        assert edge.request("GET", "/metrics")[0] == 200
        everything = half + silent + kept_alive
        assert received_until_closed(everything, CLOSE_DEADLINE_S) == [b""] * len(everything)
    assert edge.request("GET", "/openapi.json")[0] == 200


def test_a_malformed_or_endless_head_is_answered_in_json_and_closed(edge: Serve) -> None:
    endless = HALF_HEAD + b"\r\nX-Padding: " + b"a" * (LIMITS.head_bytes_max + 1)
    malformed = b"GET /info HTTP/1.1\r\nNo colon\r\n\r\n"
    for sending, status in ((malformed, 400), (endless, 431)):
        with connections(edge, 1, sending) as (sock,):
            answer = response(sock)
            assert answer[0] == status, answer
            assert answer[1]["content-type"] == "application/json"
            assert answer[1]["connection"] == "close"
            assert json.loads(answer[2])["error"]["code"] == "invalid_request"


def test_past_the_requests_in_progress_a_request_gets_503_unavailable_then_is_served(
    edge: Serve,
) -> None:
    with connections(edge, 4, HELD_PURCHASE) as held:
        # The held requests reach the server in their own time: poll until they count.
        answers: list[tuple[int, dict[str, str], bytes]] = []

        def refused() -> bool:
            answers.append(edge.request("GET", "/openapi.json"))  # 200 below the bound
            return answers[-1][0] == 503

        wait_until(refused, CLOSE_DEADLINE_S, "a request refused past 4 in progress")
        assert_unavailable(*answers[-1])
        peer = {"Authorization": f"Bearer {edge.secret}"}
        assert edge.request("GET", "/metrics", headers=peer)[0] == 200
        for sock in held:
            sock.sendall(BAD_QUANTITY)
        assert [response(sock)[0] for sock in held] == [422] * len(held)
    wait_until(
        lambda: edge.request("GET", "/openapi.json")[0] == 200,
        CLOSE_DEADLINE_S,
        "served again once the requests in progress were done",
    )


def test_a_connection_past_the_bound_is_answered_503_and_closed(crowded: Serve) -> None:
    with connections(crowded, 8, b""):
        with connections(crowded, 1, FULL_HEAD) as (surplus,):
            status, headers, body = response(surplus)
            assert_unavailable(status, headers, body)
            assert headers["connection"] == "close"
            assert received_until_closed([surplus], CLOSE_DEADLINE_S) == [b""]
        peer = {"Authorization": f"Bearer {crowded.secret}"}
        assert crowded.request("GET", "/metrics", headers=peer)[0] == 200
    wait_until(
        lambda: crowded.request("GET", "/openapi.json")[0] == 200,
        CLOSE_DEADLINE_S,
        "served again once the connections were closed",
    )
