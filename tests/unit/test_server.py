"""`server.HeadWithBody`: every response leaves in one write (head and body together), and
nothing uvicorn writes is held back or lost."""

from __future__ import annotations

import asyncio
from typing import cast

from bazar.server import HeadWithBody


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
