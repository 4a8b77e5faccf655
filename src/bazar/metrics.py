"""Prometheus metrics of the front end, in a registry of its own (no global state).

Requests are labelled by method, the route's first path segment (bounded cardinality) and
status class; latency is a histogram per route.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROUTES = frozenset(
    {
        "",
        "search",
        "info",
        "purchase",
        "orders",
        "books",
        "health",
        "cluster",
        "metrics",
        "openapi.json",
        "docs",
    }
)


def route_label(path: str) -> str:
    first = path.lstrip("/").split("/", 1)[0]
    return "/" + first if first in ROUTES else "other"


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bazar_requests",
            "Front-end requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bazar_request_seconds",
            "Front-end request latency.",
            ["route"],
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self, app: ASGIApp) -> ASGIApp:
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
                route = route_label(scope["path"])
                self.requests.labels(scope["method"], route, str(status)).inc()
                self.latency.labels(route).observe(time.perf_counter() - started)

        return measured
