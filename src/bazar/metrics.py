"""Prometheus metrics of the front end, in a registry of its own (no global state).

Requests are labelled by method, the route's first path segment (bounded cardinality) and
status class; latency is a histogram per route.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bazar.frontend.cache import Cache

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
        self.backend_reads = Counter(
            "bazar_backend_reads",
            "Reads the front end sent to replicas (each attempt).",
            ["tier", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bazar_request_seconds",
            "Front-end request latency.",
            ["route"],
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
            registry=self.registry,
        )

    def watch_cache(self, cache: Cache) -> None:
        self.registry.register(CacheCollector(cache))

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


class CacheCollector(Collector):
    """Reads the cache's counters at scrape time: nothing to update on the hot path."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        cache = self.cache
        yield GaugeMetricFamily(
            "bazar_cache_entries", "Cached responses.", value=len(cache.entries)
        )
        for name, value, text in (
            ("hits", cache.hits, "Reads answered from the cache."),
            ("misses", cache.misses, "Reads that went to a replica."),
            ("invalidations", cache.invalidations, "Invalidations received."),
            ("rejected_fills", cache.rejected_fills, "Late fills refused by the version rule."),
            ("evictions", cache.evictions, "Entries evicted by the size bound."),
            ("expirations", cache.expirations, "Entries expired by the TTL."),
        ):
            yield CounterMetricFamily(f"bazar_cache_{name}", text, value=value)
