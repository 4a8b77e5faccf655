"""The HTTP server every process runs: uvicorn (uvloop, httptools), with three changes.

1. One write per response. uvicorn writes a response's head and its body with two `send()`
   calls, so the peer receives two segments and, on a small VM, often wakes twice for one
   answer; every internal hop pays it twice (a purchase crosses about eight). `HeadWithBody`
   holds a response head until its body and sends them together, as aiohttp's server and
   client already do.
2. Slow heads. A connection has `header_timeout_s` to send a whole request head from when it
   opens or its last response leaves. uvicorn arms an idle timer after each response but stops
   it at the first byte of the next request, and arms none for a new connection, so a half head
   held a connection (and a file) forever. `OneWrite` arms that same timer on connect and stops
   it only when the head is whole. It closes without an answer (no 408): an idle keep-alive
   connection may be in the middle of being reused by its client, which would take a 408 for
   the answer to its next request, and a half head has no request to answer yet.
3. Bounds. Past `connections_max` open connections, a new connection's first request is
   answered 503 `unavailable` and the connection closed; past `inflight_requests_max` requests
   being handled (cache hits included: the check runs before the app), a request is answered
   503 `unavailable` and its connection kept. Both answers are the project's JSON error with
   Retry-After, made once. A request with the cluster secret (a peer: leases, replication, the
   front end's reads) is never refused: peers are few and bounded by their own pools
   (`transport.CONNECTIONS_MAX` each), and refusing them would turn public load into lost
   leases and failovers. The cost per request is one `len()` of uvicorn's task set.
4. Heads in bounds, errors in JSON. httptools bounds neither a request line nor its headers
   (one connection sent 329 MB of headers in 3 s): a head past `head_bytes_max` is answered
   431, and a malformed one 400 (uvicorn's answer was plain text), both as the project's JSON
   error `invalid_request`, and the connection closed.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import logging
import resource
import uuid
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bazar.config import Limits
from bazar.errors import BazarError, InvalidRequest, Unavailable
from bazar.http_app import error_response, request_id
from bazar.transport import CONNECTIONS_MAX as PEER_CONNECTIONS_MAX

log = logging.getLogger("bazar.server")

_HEAD = b"HTTP/1.1 "
_INFORMATIONAL = b"HTTP/1.1 1"  # 100 Continue goes out at once: the client waits for it
_END_OF_HEAD = b"\r\n\r\n"
# Open files a process needs besides its public connections: its own pool to its peers, its
# peers' connections to it (a few peers), SQLite and log files, refused connections on their
# way out.
FILES_BESIDES_CONNECTIONS = 4 * PEER_CONNECTIONS_MAX
REFUSALS_REPORT_INTERVAL_S = 10.0


class HeadWithBody:
    """A transport that holds a bare response head until the next write (its body)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._head is None:
            bare_head = data.startswith(_HEAD) and data.endswith(_END_OF_HEAD)
            if bare_head and not data.startswith(_INFORMATIONAL):
                self._head = data
                return
            self._transport.write(data)
            return
        head, self._head = self._head, None
        self._transport.write(head + data)

    def close(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def refusal(message: str, *, close: bool) -> ASGIApp:
    """An app that answers any request 503 `unavailable`, its body and headers made once."""
    error = Unavailable(message, headers={"Connection": "close"} if close else None)
    response = error_response(error)
    headers = response.raw_headers
    body = response.body
    status = response.status_code

    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        request_headers = [*headers, (b"x-request-id", request_id(scope))]
        await send({"type": "http.response.start", "status": status, "headers": request_headers})
        await send({"type": "http.response.body", "body": body})

    return refuse


def closing_answer(error: BazarError) -> tuple[bytes, bytes]:
    """`error`'s response as bytes, closing the connection, for a request that has no head
    to answer through the app: (the head up to its request id, the rest)."""
    response = error_response(error)
    phrase = http.HTTPStatus(error.status).phrase
    head = [f"HTTP/1.1 {error.status} {phrase}\r\n".encode()]
    head += [name + b": " + value + b"\r\n" for name, value in response.raw_headers]
    head.append(b"connection: close\r\nx-request-id: ")
    return b"".join(head), b"\r\n\r\n" + response.body


def head_error(status: int, message: str) -> InvalidRequest:
    error = InvalidRequest(message)
    error.status = status  # the request's framing, not its content: 400 or 431, not 422
    return error


class Edge:
    """What the connections of one server share: the bounds, the peers' credential, and the
    answers past the bounds."""

    def __init__(self, limits: Limits, secret: str, connections_max: int) -> None:
        assert connections_max >= 1
        assert secret
        self.connections_max = connections_max
        self.inflight_requests_max = limits.inflight_requests_max
        self.head_bytes_max = limits.head_bytes_max
        self.peer_authorization = f"Bearer {secret}".encode()
        self.busy = refusal("too many requests in progress here; retry later", close=False)
        self.full = refusal("too many connections here; retry later", close=True)
        self.head_too_large = closing_answer(
            head_error(431, f"the request head is larger than {limits.head_bytes_max} bytes")
        )
        self.malformed = closing_answer(head_error(400, "malformed HTTP request"))
        self.refused = 0
        self.reported_at_s: float | None = None

    def from_peer(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """The request carries the cluster secret (read only past a bound, never per request)."""
        for name, value in headers:
            if name == b"authorization":
                return hmac.compare_digest(value, self.peer_authorization)
        return False

    def refuse(self, surplus: bool, now_s: float, connections: int, inflight: int) -> ASGIApp:
        """The answer past a bound; a warning on the first refusal, then one per interval."""
        self.refused += 1
        due = self.reported_at_s is None or now_s - self.reported_at_s >= REFUSALS_REPORT_INTERVAL_S
        if due:
            log.warning(
                "refused %d requests with 503 since the last report: connections %d (max %d),"
                " requests in progress %d (max %d)",
                self.refused,
                connections,
                self.connections_max,
                inflight,
                self.inflight_requests_max,
            )
            self.refused = 0
            self.reported_at_s = now_s
        return self.full if surplus else self.busy


class OneWrite(HttpToolsProtocol):
    """uvicorn's httptools protocol with the changes above. uvicorn's idle timer
    (`timeout_keep_alive_task`, `header_timeout_s` long) is the head timer: armed on connect
    and after each response (by uvicorn), stopped only by a whole head or a lost connection."""

    edge: Edge  # set per server by `protocol()`
    surplus = False  # this connection came past `connections_max`
    head_bytes = 0  # received while the current head is not whole

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadWithBody(transport))  # type: ignore[arg-type]
        self.surplus = len(self.connections) > self.edge.connections_max
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def _unset_keepalive_if_required(self) -> None:
        """uvicorn stops its idle timer at a request's first byte (and on a response, when
        none runs); here only a whole head or a lost connection stops it."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        scope = self.scope
        if scope is not None and "method" not in scope:  # a head still not whole
            # The chunk may also hold the end of the previous request (pipelining): an
            # overcount by less than one read, harmless at this bound.
            self.head_bytes += len(data)
            if self.head_bytes > self.edge.head_bytes_max and not self.transport.is_closing():
                self.answer_and_close(self.edge.head_too_large)

    def send_400_response(self, msg: str) -> None:
        """A malformed request: uvicorn's plain-text 400 as the project's JSON error."""
        self.answer_and_close(self.edge.malformed)

    def answer_and_close(self, answer: tuple[bytes, bytes]) -> None:
        head, rest = answer
        self.transport.write(head + uuid.uuid4().hex.encode() + rest)
        self.transport.close()

    def _stop_head_timer(self) -> None:
        timer = self.timeout_keep_alive_task
        if timer is not None:
            timer.cancel()
            self.timeout_keep_alive_task = None

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        self.head_bytes = 0
        edge = self.edge
        inflight = len(self.tasks)
        past_bound = self.surplus or inflight >= edge.inflight_requests_max
        if past_bound and not edge.from_peer(self.headers):
            self.on_headers_complete_refused(inflight)
            return
        super().on_headers_complete()

    def on_headers_complete_refused(self, inflight: int) -> None:
        """uvicorn's request start, with the refusal in place of the app."""
        app = self.app
        refusal = self.edge.refuse(self.surplus, self.loop.time(), len(self.connections), inflight)
        self.app = refusal
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)


def protocol(limits: Limits, secret: str, connections_max: int) -> type[OneWrite]:
    """The protocol class of one server: `OneWrite` bound to that server's `Edge`."""

    class Protocol(OneWrite):
        edge = Edge(limits, secret, connections_max)

    return Protocol


def connections_bound(connections_max: int, soft: int, hard: int) -> tuple[int, int]:
    """(the open-files limit to set, the connection bound it allows): room for
    `connections_max` connections and `FILES_BESIDES_CONNECTIONS` when the hard limit has it,
    else as many connections as it has room for."""
    wanted = connections_max + FILES_BESIDES_CONNECTIONS
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft, connections_max
    files = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    return files, max(1, min(connections_max, files - FILES_BESIDES_CONNECTIONS))


def open_files(connections_max: int) -> int:
    """Raise this process's open-files limit to fit `connections_max` connections; the bound
    to enforce (lower, with a warning, when the hard limit has no room for it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    files, bound = connections_bound(connections_max, soft, hard)
    if files != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, hard))
    if bound < connections_max:
        log.warning(
            "open files are limited to %d: at most %d connections, not %d",
            files,
            bound,
            connections_max,
        )
    return bound


def serve(app: ASGIApp, host: str, port: int, limits: Limits, secret: str) -> None:
    connections_max = open_files(limits.connections_max)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=protocol(limits, secret, connections_max),
        access_log=False,  # our edge logs each request (bazar.logs)
        log_config=None,  # uvicorn's lines go through the process's handlers (bazar.logs)
        log_level="warning",
        lifespan="on",
        backlog=2048,
        timeout_keep_alive=limits.header_timeout_s,
        timeout_graceful_shutdown=2,
        server_header=False,
    )
    uvicorn.Server(config).run()
