"""The cache-hit fast path: a pure ASGI app in front of everything else.

A hit is most of the lab's traffic and needs no routing, no validation beyond recognising
its key, and no encoding: the cache holds the encoded body, and the headers are built from
constants. Anything that is not a plain hit (a miss, a `Cache-Control: no-cache` read, a
path in another spelling, another method) goes on to the full app unchanged, which does the
same lookup again only when this one did not count a miss. A hit is logged here, one line
like every request's (`logs.request_done`); the edge logs the rest.
"""

from __future__ import annotations

import time
from types import MappingProxyType

from starlette.types import ASGIApp, Receive, Scope, Send

from bazar import logs
from bazar.clock import monotonic_ms
from bazar.errors import InvalidRequest
from bazar.frontend.cache import LIST_KEY, Cache, book_key, topic_key
from bazar.http_app import request_id
from bazar.metrics import Metrics
from bazar.request import search_topic

HIT = MappingProxyType({"cache": "hit"})  # a hit's field in its request line
MISSED = "bazar.cache_missed"  # scope key: this request's lookup already missed
ID_DIGITS_MAX = 18  # always below 2^63; longer ids take the full path
_JSON = (b"content-type", b"application/json")
LIST_ROUTE, BOOK_ROUTE, TOPIC_ROUTE = "/info", "/info/{id}", "/search/{topic:path}"
HIT_ROUTES = (LIST_ROUTE, BOOK_ROUTE, TOPIC_ROUTE)


def hit_key(path: str, topic_chars_max: int) -> str | None:
    """The cache key of a canonical read path, else None (the full app decides)."""
    if path.startswith("/info/"):
        digits = path[6:]
        canonical = digits.isascii() and digits.isdigit() and not digits.startswith("0")
        if canonical and len(digits) <= ID_DIGITS_MAX:
            return book_key(int(digits))
        return None
    if path == "/info":
        return LIST_KEY
    if path.startswith("/search/") and not path.endswith("/"):
        try:
            return topic_key(search_topic(path[8:], topic_chars_max))
        except InvalidRequest:
            return None
    return None


def hit_route(path: str) -> str:
    """The template of the route that a hit on `path` (a `hit_key` path) stands for."""
    if path == "/info":
        return LIST_ROUTE
    return BOOK_ROUTE if path[1] == "i" else TOPIC_ROUTE


def wants_fresh(headers: list[tuple[bytes, bytes]]) -> bool:
    """`Cache-Control: no-cache` (RFC 9111 §5.2.1.4): the client asks for a value read from
    a replica, not a stored one."""
    return any(name == b"cache-control" and b"no-cache" in value.lower() for name, value in headers)


class HitPath:
    def __init__(self, cache: Cache, metrics: Metrics, topic_chars_max: int, app: ASGIApp) -> None:
        self.cache = cache
        self.app = app
        self.topic_chars_max = topic_chars_max
        # Labelled with the templates of the routes that would have answered (service.py).
        self.counted = {route: metrics.requests.labels("GET", route, "200") for route in HIT_ROUTES}
        self.latency = {route: metrics.latency.labels(route) for route in HIT_ROUTES}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        key = hit_key(path, self.topic_chars_max)
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if key is None or wants_fresh(headers):
            await self.app(scope, receive, send)
            return
        body = self.cache.get(key, monotonic_ms())
        if body is None:
            scope[MISSED] = True
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    _JSON,
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", rid),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        route = hit_route(path)
        self.counted[route].inc()
        self.latency[route].observe(time.perf_counter() - started)
        logs.request_done(rid, "GET", path, 200, started, HIT)
