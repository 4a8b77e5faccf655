"""The HTTP server every process runs: uvicorn (uvloop, httptools), with one change.

uvicorn writes a response's head and its body with two `send()` calls, so the peer receives
two segments and, on a small VM, often wakes twice for one answer; every internal hop pays it
twice (a purchase crosses about eight). `OneWrite` holds a response head until its body and
sends them together, as aiohttp's server and client already do.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD = b"HTTP/1.1 "
_INFORMATIONAL = b"HTTP/1.1 1"  # 100 Continue goes out at once: the client waits for it
_END_OF_HEAD = b"\r\n\r\n"


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


class OneWrite(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadWithBody(transport))  # type: ignore[arg-type]


def serve(app: ASGIApp, host: str, port: int) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=OneWrite,
        access_log=False,  # our edge logs each request (bazar.logs)
        log_config=None,  # uvicorn's lines go through the process's handlers (bazar.logs)
        log_level="warning",
        lifespan="on",
        backlog=2048,
        timeout_graceful_shutdown=2,
        server_header=False,
    )
    uvicorn.Server(config).run()
