"""The front end: the only public process. It validates every request at the edge, routes
writes to the primaries, balances reads over the replicas, and is the configuration manager
(view service) of both replicated tiers: it numbers views, persists each one with fsync
before announcing it, and grants the replicas' leases.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from bazar import logs
from bazar.batcher import ToPrimary
from bazar.clock import monotonic_ms
from bazar.config import REPLICATED_TIERS, Cluster, Secrets
from bazar.errors import (
    BazarError,
    IdempotencyKeyReused,
    InvalidRequest,
    NotFound,
    OutOfStock,
    Unavailable,
)
from bazar.frontend import openapi, pages
from bazar.frontend.cache import LIST_KEY, Cache, book_key, topic_key
from bazar.frontend.console import Console, with_console_paths
from bazar.frontend.hits import MISSED, HitPath, wants_fresh
from bazar.frontend.membership import Membership
from bazar.frontend.metrics import FrontendMetrics
from bazar.frontend.reads import Reads
from bazar.frontend.view_adapter import ViewAdapter
from bazar.frontend.views import Leases, ViewManager
from bazar.frontend.viewstore import ViewStore
from bazar.frontend.writes import Writes
from bazar.http_app import build_app, decode_body, json_response, read_body, require_token
from bazar.outcomes import outcome_of
from bazar.request import (
    idempotency_key,
    page_limit,
    patch_command,
    positive_id,
    purchase_quantity,
    search_topic,
)
from bazar.retry import WriteFailed
from bazar.transport import Transport
from bazar.wire import (
    BookData,
    BookListData,
    CacheInfo,
    ClusterData,
    ClusterInfo,
    HealthData,
    HealthStatus,
    Invalidate,
    InvalidateReply,
    LeaseReply,
    LeaseRequest,
    OrderData,
    OrderPage,
    PurchaseBatch,
    PurchaseData,
    PurchaseOutcomes,
    PurchaseReply,
    PurchaseRequest,
    ReplicaInfo,
    TierInfo,
    UpdateBook,
    UpdateResult,
    VersionedBook,
    VersionedBookList,
    View,
    encode,
)

T = TypeVar("T")
log = logging.getLogger("bazar.frontend")


async def naming_key(key: str, answer: Awaitable[Response]) -> Response:
    """Every answer to a write names its key, generated ones included, so that a client
    can retry a 503 safely even if it sent none."""
    try:
        return await answer
    except BazarError as error:
        error.headers["Idempotency-Key"] = key
        raise


def key_headers(key: str, *, replayed: bool, uncertain: bool) -> dict[str, str]:
    """The headers of a write's answer. A replay of our own earlier attempt (given up in a
    failover: `uncertain`) is still this request's first answer: the client never saw that
    attempt's, so it is not marked replayed."""
    headers = {"Idempotency-Key": key}
    if replayed and not uncertain:
        headers["Idempotent-Replayed"] = "true"
    return headers


class Frontend:
    def __init__(
        self,
        cluster: Cluster,
        secrets: Secrets,
        cluster_file: Path | None = None,
        *,
        control_socket: Path | None = None,
    ) -> None:
        self.cluster = cluster
        self.limits = cluster.limits
        self.secrets = secrets
        self.transport = Transport(secrets.cluster_secret)
        view_store = ViewStore(Path(cluster.data_dir) / "frontend" / "views.json")
        self.views = ViewManager(
            view_store.load(cluster),
            booted_ms=monotonic_ms(),
            leases=Leases(
                lease_ms=self.limits.lease_ms, lease_margin_ms=self.limits.lease_margin_ms
            ),
        )
        self.cache = Cache(entries_max=cluster.cache_entries_max, ttl_ms=cluster.cache_ttl_ms)
        self.cache_enabled = cluster.cache_enabled
        self.known_books: set[int] = set()  # ids seen in replica answers: the catalog's size
        self.metrics = FrontendMetrics(self.cache, self.views, monotonic_ms)
        self.writes = Writes(self.views, self.limits)
        self.reads = Reads(self.views, self.transport, self.limits, self.metrics)
        self.adapter = ViewAdapter(view_store, self.views, self.limits, self._primary_changed)
        self.openapi = openapi.openapi_json()
        self.assets = pages.assets()
        # The teaching console, only under `bazar up --demo` (its supervisor's socket).
        self.console = None if control_socket is None else Console(secrets, control_socket)
        if self.console is not None:
            self.openapi = with_console_paths(self.openapi)
        self.membership = Membership(self, cluster_file)
        self._purchases: ToPrimary[PurchaseRequest, PurchaseReply] = ToPrimary(
            self._purchase_batch, self.limits
        )

    # ---------------------------------------------------------------- app and lifecycle

    def app(self) -> ASGIApp:
        routes: list[BaseRoute] = [
            Route("/", self._index, methods=["GET"]),
            Route("/docs", self._docs, methods=["GET"]),
            Route("/static/{path:path}", self._static, methods=["GET"]),
            Route("/openapi.json", self._openapi, methods=["GET"]),
            Route("/metrics", self.metrics.endpoint, methods=["GET"]),
            Route("/health", self._health, methods=["GET"]),
            Route("/cluster", self._cluster, methods=["GET"]),
            Route("/search", self._search_empty, methods=["GET"]),
            Route("/search/{topic:path}", self._search, methods=["GET"]),
            Route("/info", self._info_all, methods=["GET"]),
            Route("/info/{id}", self._info, methods=["GET"]),
            Route("/purchase/{id}", self._purchase, methods=["PUT", "POST"]),
            Route("/orders", self._orders, methods=["GET"]),
            Route("/orders/{id}", self._order, methods=["GET"]),
            Route("/books/{id}", self._patch_book, methods=["PATCH"]),
            Route("/internal/invalidate", self._invalidate, methods=["POST"]),
            Route("/internal/lease", self._lease, methods=["POST"]),
            Route("/admin/replicas", self.membership.add, methods=["POST"]),
            Route("/admin/replicas/{name}", self.membership.remove, methods=["DELETE"]),
            Route("/admin/switchover", self.membership.switchover, methods=["POST"]),
            *(self.console.routes() if self.console is not None else []),
        ]
        app = build_app(routes, lifespan=self.lifespan, measure=self.metrics.middleware)
        if not self.cache_enabled:
            return app
        return HitPath(self.cache, self.metrics, self.limits.topic_chars_max, app)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.transport.start()
        self.adapter.start()
        try:
            yield
        finally:
            await self.adapter.stop()
            await self.transport.close()

    # ---------------------------------------------------------------- leases and views

    def _primary_changed(self, tier: str) -> None:
        if tier == "catalog":
            self.cache.primary_changed()
        self.writes.primary_changed(tier)

    async def change(self, compute: Callable[[], View]) -> View:
        """(For membership changes: `ViewAdapter.change`.)"""
        return await self.adapter.change(compute)

    def holding_writes(self, tiers: tuple[str, ...]) -> AbstractAsyncContextManager[None]:
        """(For a switchover: `Writes.holding`.)"""
        return self.writes.holding(tiers)

    async def _lease(self, request: Request) -> Response:
        """A replica asks for a lease and learns the views (frontend/views.py, rule 2)."""
        require_token(request, self.secrets.cluster_secret, "cluster secret")
        lease = await decode_body(request, LeaseRequest, self.limits.request_bytes_max)
        granted, views = await self.adapter.on_lease(lease)
        if granted:
            self.cache.heard_primary(lease.status, views["catalog"])
        return json_response(LeaseReply(views=views, granted=granted))

    # ---------------------------------------------------------------- reads

    def _cached(self, key: str, request: Request) -> Response | None:
        """The stored answer, unless the cache is off, the client asked for a fresh read
        (`Cache-Control: no-cache`) or the fast path has just missed it."""
        if not self.cache_enabled or wants_fresh(request.scope["headers"]):
            return None
        body = None if MISSED in request.scope else self.cache.get(key, monotonic_ms())
        logs.note("cache", "miss" if body is None else "hit")
        return None if body is None else json_response(body)

    def _fill(
        self,
        key: str,
        body: bytes,
        version: tuple[int, int],
        books: tuple[int, ...],
        ticket: bool,
    ) -> None:
        """`ticket`: taken as the read started (`Cache.ticket`)."""
        if self.cache_enabled:
            self.cache.fill(key, body, version, books, monotonic_ms(), ticket)

    async def _books_read(self, key: str, path: str, request: Request) -> Response:
        """A list of books (search or all), cached under its logical key."""
        hit = self._cached(key, request)
        if hit is not None:
            return hit
        ticket = self.cache.ticket()  # as the read starts
        reply = await self.reads.read("catalog", path, VersionedBookList)
        self.known_books.update(book.id for book in reply.data)
        body = encode(BookListData(data=reply.data))
        self._fill(key, body, reply.version, tuple(book.id for book in reply.data), ticket)
        return json_response(body)

    async def _search_empty(self, request: Request) -> Response:
        raise InvalidRequest("a topic is required: /search/{topic}")

    async def _search(self, request: Request) -> Response:
        topic = search_topic(request.path_params["topic"], self.limits.topic_chars_max)
        # As a query parameter: in a path, a topic of "." or ".." would be normalised away.
        path = "/search?topic=" + quote(topic, safe="")
        return await self._books_read(topic_key(topic), path, request)

    async def _info_all(self, request: Request) -> Response:
        return await self._books_read(LIST_KEY, "/books", request)

    async def _info(self, request: Request) -> Response:
        book_id = positive_id(request.path_params["id"])
        key = book_key(book_id)
        hit = self._cached(key, request)
        if hit is not None:
            return hit
        ticket = self.cache.ticket()
        reply = await self.reads.read("catalog", f"/books/{book_id}", VersionedBook)
        self.known_books.add(book_id)
        body = encode(BookData(data=reply.data))
        self._fill(key, body, reply.version, (book_id,), ticket)
        return json_response(body)

    async def _invalidate(self, request: Request) -> Response:
        require_token(request, self.secrets.cluster_secret, "cluster secret")
        message = await decode_body(request, Invalidate, self.limits.request_bytes_max)
        dropped = self.cache.invalidate_once(message.books, message.version)
        return json_response(InvalidateReply(dropped=dropped))

    async def _orders(self, request: Request) -> Response:
        limit = page_limit(
            request.query_params.get("limit"),
            self.limits.page_limit_default,
            self.limits.page_limit_max,
        )
        path = f"/orders?limit={limit}"
        after = request.query_params.get("after")
        if after is not None:
            path += "&after=" + quote(after, safe="")
        return json_response(await self.reads.read("order", path, OrderPage))

    async def _order(self, request: Request) -> Response:
        order_id = request.path_params["id"]
        if not (0 < len(order_id) <= 64 and order_id.isascii() and order_id.isalnum()):
            raise NotFound("no such order")
        return json_response(await self.reads.read("order", f"/orders/{order_id}", OrderData))

    # ---------------------------------------------------------------- writes

    async def _purchase(self, request: Request) -> Response:
        book_id = positive_id(request.path_params["id"])
        body = await read_body(request, self.limits.request_bytes_max)
        quantity = purchase_quantity(
            body, request.headers.get("content-type"), self.limits.quantity_max
        )
        key = self._key_of(request)
        return await naming_key(key, self._purchase_with_key(book_id, quantity, key))

    def _key_of(self, request: Request) -> str:
        """The client's `Idempotency-Key`, else one of our own: every write goes under a
        key, so that it can be retried across a failover and runs at most once.

        Raises: InvalidRequest (a malformed key).
        """
        key = idempotency_key(request.headers, self.limits.idempotency_key_chars_max)
        return key or uuid.uuid4().hex

    async def _purchase_with_key(self, book_id: int, quantity: int, key: str) -> Response:
        """Raises: OutOfStock, IdempotencyKeyReused, NotFound, Unavailable."""
        if book_id not in self.known_books:
            # Books are never deleted: once seen, always there. An unknown id is answered
            # 404 here, without replicated writes on the order tier.
            await self.reads.read("catalog", f"/books/{book_id}", VersionedBook)
            self.known_books.add(book_id)
        purchase = PurchaseRequest(idempotency_key=key, book_id=book_id, quantity=quantity)
        try:
            call = partial(self._purchase_call, purchase)
            reply, uncertain = await self.writes.write("order", call)
        except WriteFailed as failed:
            raise Unavailable(f"no order primary could take the purchase: {failed}") from None
        headers = key_headers(key, replayed=reply.replayed, uncertain=uncertain)
        if reply.status == "completed":
            assert reply.order is not None
            return json_response(
                PurchaseData(data="Purchase done", order=reply.order), 200, headers
            )
        if reply.status == "out_of_stock":
            raise OutOfStock(f"book {book_id} has fewer than {quantity} in stock", headers=headers)
        if reply.status == "key_reused":
            raise IdempotencyKeyReused("this Idempotency-Key was used for another request")
        raise NotFound(f"no book {book_id}")

    async def _purchase_call(
        self, purchase: PurchaseRequest, url: str, timeout_ms: int
    ) -> PurchaseReply:
        """Purchases that arrive while a call to the order primary is out go together in the
        next one."""
        return await self._purchases.call(url, purchase, timeout_ms)

    async def _purchase_batch(
        self, url: str, purchases: list[PurchaseRequest]
    ) -> list[PurchaseReply | Exception]:
        reply = await self.transport.call(
            "POST",
            url + "/internal/purchase",
            PurchaseOutcomes,
            body=PurchaseBatch(purchases=purchases),
            timeout_ms=self.limits.write_timeout_ms,
        )
        return [outcome_of(outcome.reply, outcome.error) for outcome in reply.outcomes]

    async def _patch_book(self, request: Request) -> Response:
        require_token(request, self.secrets.admin_token, "admin token")
        book_id = positive_id(request.path_params["id"])
        body = await read_body(request, self.limits.request_bytes_max)
        command = patch_command(
            book_id, body, request.headers.get("content-type"), self.limits.stock_delta_abs_max
        )
        key = self._key_of(request)
        command = msgspec.structs.replace(command, idempotency_key=key)
        return await naming_key(key, self._patch_book_with_key(command, key))

    async def _patch_book_with_key(self, command: UpdateBook, key: str) -> Response:
        """Raises: NotFound, OutOfStock, IdempotencyKeyReused, Unavailable."""
        book_id = command.book_id
        try:
            result, uncertain = await self.writes.write(
                "catalog",
                lambda url, timeout_ms: self.transport.call(
                    "POST",
                    f"{url}/internal/books/{book_id}",
                    UpdateResult,
                    body=command,
                    timeout_ms=timeout_ms,
                ),
            )
        except WriteFailed as failed:
            raise Unavailable(f"no catalog primary could take the update: {failed}") from None
        headers = key_headers(key, replayed=result.replayed, uncertain=uncertain)
        if result.status == "not_found":
            raise NotFound(f"no book {book_id}")
        if result.status == "out_of_stock":
            raise OutOfStock(f"the stock of book {book_id} cannot go below 0", headers=headers)
        if result.status == "key_reused":
            raise IdempotencyKeyReused("this Idempotency-Key was used for another request")
        assert result.book is not None
        return json_response(BookData(data=result.book), 200, headers)

    # ---------------------------------------------------------------- cluster and pages

    def replica_info(self, tier: str, name: str) -> ReplicaInfo:
        view = self.views.views[tier]
        status = self.views.health[tier][name].status
        return ReplicaInfo(
            name=name,
            url=view.url_of(name),
            role="primary" if name == view.primary else "backup",
            state=self.views.state(tier, name, monotonic_ms()),
            pid=status.pid if status else None,
            last_seq=status.last_seq if status else None,
            commit_seq=status.commit_seq if status else None,
        )

    def tier_info(self, tier: str) -> TierInfo:
        view = self.views.views[tier]
        replicas = [self.replica_info(tier, member.name) for member in view.members]
        return TierInfo(epoch=view.epoch, primary=view.primary, replicas=replicas)

    def cluster_info(self) -> ClusterInfo:
        tier_info = self.tier_info

        cache = CacheInfo(
            enabled=self.cache_enabled,
            entries=len(self.cache.entries),
            hits=self.cache.hits,
            misses=self.cache.misses,
            invalidations=self.cache.invalidations,
            rejected_fills=self.cache.rejected_fills,
        )
        return ClusterInfo(catalog=tier_info("catalog"), order=tier_info("order"), cache=cache)

    async def _cluster(self, request: Request) -> Response:
        return json_response(ClusterData(data=self.cluster_info()))

    async def _health(self, request: Request) -> Response:
        now = monotonic_ms()
        for tier in REPLICATED_TIERS:
            if not self.views.primary_up(tier, now):
                raise Unavailable(f"the {tier} tier has no serving primary")
            in_sync = len(self.views.in_sync(tier, now))
            if in_sync < self.cluster.min_in_sync:
                raise Unavailable(
                    f"the {tier} tier has {in_sync} in-sync replicas, fewer than "
                    f"--min-in-sync {self.cluster.min_in_sync}"
                )
        return json_response(HealthData(data=HealthStatus(status="ok")))

    async def _openapi(self, request: Request) -> Response:
        return json_response(self.openapi)

    async def _docs(self, request: Request) -> Response:
        return Response(pages.page("docs"), media_type="text/html; charset=utf-8")

    async def _static(self, request: Request) -> Response:
        return pages.asset_response(self.assets, request.path_params["path"])

    async def _index(self, request: Request) -> Response:
        return Response(pages.page("index"), media_type="text/html; charset=utf-8")
