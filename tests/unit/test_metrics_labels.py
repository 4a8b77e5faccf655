"""Request metrics are labelled by route template and a bounded method, never by a raw path;
every process's metrics live in a registry of their own, so one interpreter can hold
several apps (as tests do). In process, through the ASGI interface: no sockets."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from bazar.config import Limits
from bazar.frontend.cache import Cache
from bazar.frontend.metrics import FrontendMetrics
from bazar.frontend.views import ViewManager
from bazar.http_app import build_app
from bazar.metrics import Metrics
from bazar.replication.metrics import ReplicaMetrics, powers_of_two


async def ok(request: Request) -> Response:
    return Response(b"ok")


def status_of(app: ASGIApp, method: str, path: str) -> int:
    """One request through the ASGI app; its response status."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    async def call() -> None:
        await app(scope, receive, send)

    asyncio.run(call())
    return int(sent[0]["status"])


def count(metrics: Metrics, method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    return metrics.registry.get_sample_value("bazar_requests_total", labels) or 0.0


def test_requests_are_counted_by_route_template_and_bounded_method() -> None:
    metrics = Metrics()
    app = build_app([Route("/books/{id}", ok, methods=["GET"])], measure=metrics.middleware)
    assert status_of(app, "GET", "/books/1") == 200
    assert status_of(app, "GET", "/books/2/") == 200  # the trailing slash is stripped
    assert status_of(app, "GET", "/nowhere/3") == 404
    assert status_of(app, "BREW", "/books/4") == 405
    assert count(metrics, "GET", "/books/{id}", "200") == 2
    assert count(metrics, "GET", "unmatched", "404") == 1
    assert count(metrics, "other", "/books/{id}", "405") == 1
    text = metrics.render().decode()
    assert "/books/1" not in text
    assert "/nowhere" not in text
    assert "BREW" not in text


def test_each_process_has_a_registry_of_its_own() -> None:
    first, second = (ReplicaMetrics(Limits(), "catalog", "catalog-1") for _ in "ab")
    first.batch_commands.observe(3)
    labels = {"tier": "catalog", "node": "catalog-1"}
    assert first.registry.get_sample_value("bazar_batch_commands_count", labels) == 1
    assert second.registry.get_sample_value("bazar_batch_commands_count", labels) == 0
    views = ViewManager(views={}, booted_ms=0)
    fronts = [FrontendMetrics(Cache(entries_max=8, ttl_ms=1000), views, lambda: 0) for _ in "ab"]
    assert fronts[0].registry is not fronts[1].registry


def test_batch_buckets_are_powers_of_two_up_to_the_bound() -> None:
    assert powers_of_two(1) == (1.0,)
    assert powers_of_two(64) == (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    assert powers_of_two(100) == (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 100.0)
