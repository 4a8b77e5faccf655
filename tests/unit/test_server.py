"""`server`: every response leaves in one write (head and body together), and nothing uvicorn
writes is held back or lost (`HeadWithBody`); a request head must be whole within the head
timer, and past the bounds requests are answered 503 `unavailable`, peers' excepted
(`OneWrite`, driven here over a fake transport, as uvicorn drives it)."""

from __future__ import annotations

import asyncio
import json
import resource
from typing import cast

import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from bazar.config import Limits
from bazar.server import FILES_BESIDES_CONNECTIONS, HeadWithBody, connections_bound, protocol


class Wire:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> None:
        return None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def transport() -> tuple[HeadWithBody, Wire]:
    wire = Wire()
    return HeadWithBody(cast(asyncio.Transport, wire)), wire


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def test_a_head_leaves_with_its_body() -> None:
    held, wire = transport()
    held.write(HEAD)
    assert wire.writes == []
    held.write(b"{}")
    held.write(HEAD)
    held.write(b"[]")
    assert wire.writes == [HEAD + b"{}", HEAD + b"[]"]


def test_an_empty_body_still_sends_the_head() -> None:
    held, wire = transport()
    empty = b"HTTP/1.1 204 No Content\r\n\r\n"
    held.write(empty)
    held.write(b"")
    assert wire.writes == [empty]


def test_what_is_not_a_bare_head_goes_out_at_once() -> None:
    held, wire = transport()
    go_on = b"HTTP/1.1 100 Continue\r\n\r\n"
    whole = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nbad"
    held.write(go_on)
    held.write(whole)
    assert wire.writes == [go_on, whole]


def test_closing_flushes_a_held_head() -> None:
    held, wire = transport()
    held.write(HEAD)
    held.close()
    assert wire.writes == [HEAD]
    assert wire.closed
    assert held.is_closing()  # everything else is the real transport's


# ---------------------------------------------------------------- the edge: heads and bounds

SECRET = "s3cret"
LIMITS = Limits(header_timeout_s=5, connections_max=4, inflight_requests_max=2, head_bytes_max=1024)
REQUEST = b"GET /info HTTP/1.1\r\nHost: bazar\r\n\r\n"


class Connection:
    """One `OneWrite` protocol over a `Wire`, as uvicorn makes it, serving `app`."""

    def __init__(self, state: ServerState | None = None) -> None:
        self.scopes: list[Scope] = []
        self.state = state or ServerState()
        config = uvicorn.Config(
            self.app, interface="asgi3", lifespan="off", log_config=None, proxy_headers=False
        )
        self.protocol = protocol(LIMITS, SECRET, LIMITS.connections_max)(
            config=config, server_state=self.state, app_state={}
        )
        self.wire = Wire()
        self.protocol.connection_made(cast(asyncio.Transport, self.wire))

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def answered(self) -> None:
        """Every request task has run."""
        await asyncio.gather(*(t for t in self.state.tasks if isinstance(t, asyncio.Task)))

    def head_timer(self) -> asyncio.TimerHandle | None:
        return self.protocol.timeout_keep_alive_task

    def answer(self) -> tuple[bytes, dict[bytes, bytes], bytes]:
        """The last response: status line, headers, body."""
        head, _, body = self.wire.writes[-1].partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines)
        return status, headers, body


async def test_a_connection_has_a_head_timer_from_its_first_byte_to_a_whole_head() -> None:
    connection = Connection()
    timer = connection.head_timer()
    assert timer is not None
    assert timer.when() <= asyncio.get_running_loop().time() + LIMITS.header_timeout_s
    connection.protocol.data_received(REQUEST[:20])
    assert connection.head_timer() is timer  # uvicorn would have stopped it here
    assert not timer.cancelled()
    connection.protocol.data_received(REQUEST[20:])
    assert timer.cancelled()
    await connection.answered()
    assert connection.answer()[0] == b"HTTP/1.1 200 OK"
    again = connection.head_timer()  # idle keep-alive: the next head has as long
    assert again is not None
    assert not again.cancelled()
    connection.protocol.connection_lost(None)
    assert again.cancelled()


async def test_past_the_requests_in_progress_a_request_is_answered_503_unavailable() -> None:
    connection = Connection()
    for _ in range(LIMITS.inflight_requests_max):
        connection.state.tasks.add(cast(asyncio.Task[None], object()))
    connection.protocol.data_received(REQUEST)
    await connection.answered()
    status, headers, body = connection.answer()
    assert status == b"HTTP/1.1 503 Service Unavailable"
    assert json.loads(body)["error"]["code"] == "unavailable"
    assert headers[b"retry-after"] == b"1"
    assert headers[b"x-request-id"]
    assert b"connection" not in headers
    assert not connection.wire.closed
    assert connection.scopes == []


async def test_a_peer_with_the_cluster_secret_is_served_past_both_bounds() -> None:
    state = ServerState()
    for _ in range(LIMITS.connections_max):
        Connection(state)
    connection = Connection(state)
    assert connection.protocol.surplus
    for _ in range(LIMITS.inflight_requests_max):
        state.tasks.add(cast(asyncio.Task[None], object()))
    peer = REQUEST.replace(b"\r\n\r\n", f"\r\nAuthorization: Bearer {SECRET}\r\n\r\n".encode())
    connection.protocol.data_received(peer)
    await connection.answered()
    assert connection.answer()[0] == b"HTTP/1.1 200 OK"
    assert len(connection.scopes) == 1


async def test_a_connection_past_the_bound_has_its_request_answered_503_and_is_closed() -> None:
    state = ServerState()
    first = [Connection(state) for _ in range(LIMITS.connections_max)]
    assert not any(connection.protocol.surplus for connection in first)
    connection = Connection(state)
    wrong = REQUEST.replace(b"\r\n\r\n", b"\r\nAuthorization: Bearer guess\r\n\r\n")
    connection.protocol.data_received(wrong)
    await connection.answered()
    status, headers, body = connection.answer()
    assert status == b"HTTP/1.1 503 Service Unavailable"
    assert json.loads(body)["error"]["code"] == "unavailable"
    assert headers[b"connection"] == b"close"
    assert headers[b"retry-after"] == b"1"
    assert connection.wire.closed
    assert connection.scopes == []


async def test_a_head_that_grows_past_its_bound_is_answered_431_and_closed() -> None:
    connection = Connection()
    connection.protocol.data_received(b"GET /info HTTP/1.1\r\nHost: bazar\r\n")
    padding = b"X-Padding: " + b"a" * 100 + b"\r\n"
    while not connection.wire.closed:
        assert connection.protocol.head_bytes <= LIMITS.head_bytes_max
        connection.protocol.data_received(padding)
    status, headers, body = connection.answer()
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert json.loads(body)["error"]["code"] == "invalid_request"
    assert headers[b"connection"] == b"close"
    assert headers[b"x-request-id"]
    assert connection.scopes == []


async def test_a_body_does_not_count_as_a_head() -> None:
    connection = Connection()
    body = b"{}" + b" " * 10 * LIMITS.head_bytes_max
    post = b"POST /purchase/1 HTTP/1.1\r\nHost: bazar\r\nContent-Length: %d\r\n\r\n" % len(body)
    connection.protocol.data_received(post + body[:100])
    for start in range(100, len(body), 100):
        connection.protocol.data_received(body[start : start + 100])
    connection.protocol.data_received(REQUEST[:20])  # then the start of a second request
    await connection.answered()
    assert [scope["method"] for scope in connection.scopes] == ["POST"]
    assert not connection.wire.closed
    assert connection.protocol.head_bytes == 20


async def test_a_malformed_request_is_answered_400_in_json() -> None:
    connection = Connection()
    connection.protocol.data_received(b"GET /info HTTP/1.1\r\nNo colon here\r\n\r\n")
    status, headers, body = connection.answer()
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(body)["error"]["code"] == "invalid_request"
    assert connection.wire.closed


def test_the_open_files_limit_is_raised_to_fit_the_connections_or_bounds_them() -> None:
    reserve = FILES_BESIDES_CONNECTIONS
    assert connections_bound(100, 20_000, 20_000) == (20_000, 100)
    assert connections_bound(4096, 1024, 1_048_576) == (4096 + reserve, 4096)
    assert connections_bound(4096, 1024, 3000) == (3000, 3000 - reserve)
    assert connections_bound(4096, 1024, resource.RLIM_INFINITY) == (4096 + reserve, 4096)
    assert connections_bound(4096, resource.RLIM_INFINITY, resource.RLIM_INFINITY)[1] == 4096
    assert connections_bound(4096, 16, 16) == (16, 1)
