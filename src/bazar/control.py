"""The supervisor's control channel (`bazar up --demo`): a Unix socket through which the
front end's teaching console asks `bazar up` to kill, pause, resume or restart one of the
replicas it runs, or to list them.

Why the supervisor acts, not the front end: only the supervisor knows its children for sure
(a pid that a replica reported may belong to another host, or to another process once the
replica has died and its number was reused), and only it can start one again. Why a Unix
socket: it is local by construction, and it lives in a directory of its own made by
`tempfile.mkdtemp` (mode 0700, a short path under the temporary directory), so only the user
who ran `bazar up` can connect: no secret to hand over, no port to find or guard.

Rules: one request per connection, one JSON line each way (`ControlRequest`, `ControlReply`
in `wire.py`); the supervisor answers between its supervision ticks, so it never races its
own restarts; every read and wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import msgspec

from bazar.errors import Unavailable
from bazar.wire import ControlReply, ControlRequest, ErrorDetail, encode

SOCKET_NAME = "control.sock"
REQUEST_BYTES_MAX = 4096
REPLY_BYTES_MAX = 1024 * 1024
ANSWER_TIMEOUT_S = 1.0
"""How long the supervisor waits for a connected client to send its request line."""
ACCEPT_MAX = 16
"""Requests answered per tick, so that a flood cannot starve the supervision loop."""
REQUEST_TIMEOUT_MS = 15_000
"""The front end's wait for an answer: a restart may wait for a graceful stop first."""

_request_decoder = msgspec.json.Decoder(ControlRequest)
_reply_decoder = msgspec.json.Decoder(ControlReply)


def refusal(code: str, message: str) -> ControlReply:
    return ControlReply(error=ErrorDetail(code=code, message=message))


class ControlServer:
    """The supervisor's end: `serve(timeout_s)` replaces its sleep between ticks."""

    def __init__(self, handle: Callable[[ControlRequest], ControlReply]) -> None:
        self.handle = handle
        self.directory = Path(tempfile.mkdtemp(prefix="bazar-"))
        self.path = self.directory / SOCKET_NAME
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.listener.bind(str(self.path))
            self.listener.listen(ACCEPT_MAX)
            self.listener.setblocking(False)
        except OSError:
            self.close()
            raise

    def serve(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for requests, and answer those that came."""
        readable, _, _ = select.select([self.listener], [], [], timeout_s)
        if not readable:
            return
        for _ in range(ACCEPT_MAX):
            try:
                connection, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            with connection:
                self._answer(connection)

    def _answer(self, connection: socket.socket) -> None:
        connection.settimeout(ANSWER_TIMEOUT_S)
        try:
            request = _request_decoder.decode(_read_line(connection))
        except (OSError, ValueError, msgspec.DecodeError) as error:
            reply = refusal("invalid_request", f"unreadable control request: {error}")
        else:
            reply = self.handle(request)
        with contextlib.suppress(OSError):
            connection.sendall(encode(reply) + b"\n")

    def close(self) -> None:
        self.listener.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _read_line(connection: socket.socket) -> bytes:
    """Raises: OSError (timeout, reset), ValueError (too long or cut short)."""
    received = b""
    while not received.endswith(b"\n"):
        chunk = connection.recv(REQUEST_BYTES_MAX)
        if not chunk:
            raise ValueError("the request ended before its newline")
        received += chunk
        if len(received) > REQUEST_BYTES_MAX:
            raise ValueError(f"the request is longer than {REQUEST_BYTES_MAX} bytes")
    return received


async def ask(path: Path, request: ControlRequest) -> ControlReply:
    """The front end's end: one request to the supervisor and its answer.

    Raises: Unavailable (no supervisor listens, or it did not answer in time).
    """
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_MS / 1000):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=REPLY_BYTES_MAX)
            try:
                writer.write(encode(request) + b"\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        return _reply_decoder.decode(line)
    except (OSError, TimeoutError, ValueError, msgspec.DecodeError) as error:
        raise Unavailable(f"the supervisor (bazar up) does not answer: {error!r}") from None
