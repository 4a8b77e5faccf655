"""Prometheus metrics that every process serves at `GET /metrics` (no secret), each process
in a registry of its own (no global state: tests may run several apps in one interpreter).

Requests are counted by method, route template (Starlette's matched route, so a raw path
never becomes a label) and status; latency is a histogram per route. Each process adds its
own families: the front end's cache and views (`frontend/metrics.py`), a replica's log
position, lag, batches and fsync time (`replication/metrics.py`). State that already exists
is read at scrape time by a `Collector`, so the hot path updates nothing for it.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS_S = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
UNMATCHED = "unmatched"
"""The route label of a request no route matched (a 404): raw paths are unbounded."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"


def route_label(scope: Scope) -> str:
    """The template of the route Starlette matched (`/info/{id}`), else `unmatched`."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER_METHOD


class Metrics:
    """One process's registry with its request counter and latency histogram."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bazar_requests",
            "Requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bazar_request_seconds",
            "Request latency by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        # Label lookups cost more than the observations: each (method, route, status) is
        # looked up once. Bounded: methods, routes and statuses are finite sets.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """One request answered."""
        key = (method_label(method), route, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(*key[:2], str(status)), self.latency.labels(route))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def endpoint(self, request: Request) -> Response:
        """`GET /metrics`: the Prometheus text format."""
        return Response(self.render(), media_type=self.content_type)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Count and time every HTTP request. It must wrap the Starlette app directly (inside
        any middleware that copies the scope), so that it sees the route the router set."""

        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 500

            async def record(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await app(scope, receive, record)
            finally:
                elapsed = time.perf_counter() - started
                self.observe(scope["method"], route_label(scope), status, elapsed)

        return measured
