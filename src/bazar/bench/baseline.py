"""The baseline (docs/contract.md §6): a bare aiohttp server answering `GET /info/{id}` from a dict.

"Ratios are taken against a bare aiohttp server that answers from a dict, measured in the same
run": this is that server. It does what the front end does on a cache hit minus everything
Bazar adds (routing rules, validation, the cache, metrics, request ids): parse the id, look the
body up in a dict, answer it, on uvloop as the front end runs. The body is book 1 in the front
end's envelope, so the bytes on the wire are about the same.

It runs in its own process (`python -m bazar.bench.baseline --fd N`), on a listening socket
that the bench opens on a free 127.0.0.1 port and hands over (so the port is known before the
server starts, with no race for it), and is stopped by its pid at the end, always.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import uvloop
from aiohttp import web

from bazar.bench.scenarios import BenchError
from bazar.client import EXIT_FAILED, Unreachable, fetch

BOOKS = {
    1: {
        "id": 1,
        "title": "How to get a good grade in DOS in 40 minutes a day",
        "topic": "Distributed Systems",
        "stock": 6,
        "cost": 10,
    }
}
BODIES = {
    book_id: json.dumps({"data": book}, separators=(",", ":")).encode()
    for book_id, book in BOOKS.items()
}
BACKLOG = 2048  # as the front end's uvicorn
READY_DEADLINE_S = 30.0
READY_POLL_S = 0.05
STOP_DEADLINE_S = 5.0


async def _info(request: web.Request) -> web.Response:
    try:
        body = BODIES.get(int(request.match_info["id"]))
    except ValueError:
        return web.Response(status=422)
    if body is None:
        return web.Response(status=404)
    return web.Response(body=body, content_type="application/json")


async def _serve(listening: socket.socket) -> None:
    app = web.Application()
    app.router.add_get("/info/{id}", _info)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, listening).start()
    await asyncio.Event().wait()  # until SIGTERM


def main() -> None:
    parser = argparse.ArgumentParser(description="a bare aiohttp server (the bench baseline)")
    parser.add_argument("--fd", type=int, required=True, help="a listening socket")
    listening = socket.socket(fileno=parser.parse_args().fd)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(listening))


@dataclass(frozen=True, slots=True)
class Baseline:
    url: str
    pid: int


def _wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    """Raises: BenchError if the server exits or does not answer in time."""
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            reason = stderr.decode(errors="replace").strip()[-2000:]
            raise BenchError(f"the baseline server exited: {reason}", EXIT_FAILED)
        with contextlib.suppress(Unreachable):
            if fetch("GET", f"{url}/info/1", timeout=READY_POLL_S * 20).status == 200:
                return
        time.sleep(READY_POLL_S)
    raise BenchError(f"the baseline server did not answer within {READY_DEADLINE_S} s", EXIT_FAILED)


@contextlib.contextmanager
def running_baseline() -> Iterator[Baseline]:
    """The baseline server on a free 127.0.0.1 port, stopped by its pid on the way out."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(BACKLOG)
        port = listening.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "bazar.bench.baseline", "--fd", str(listening.fileno())],
            pass_fds=(listening.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C of the bench is for the bench; we stop it
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(process, url)
        yield Baseline(url, process.pid)
    finally:
        process.terminate()
        try:
            process.communicate(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


if __name__ == "__main__":
    main()
