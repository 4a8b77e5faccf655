"""The front end: the only public process. It validates every request at the edge, routes
writes to the primaries, balances reads over the replicas, and is the configuration manager
(view service) of both replicated tiers: it numbers views, persists each one with fsync
before announcing it, and heartbeats every replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from bazar import openapi, pages
from bazar.config import REPLICATED_TIERS, Cluster, Secrets
from bazar.core.balancer import RoundRobin
from bazar.core.cache import LIST_KEY, Cache, book_key, topic_key
from bazar.core.view import ViewManager, initial_view
from bazar.errors import (
    BazarError,
    IdempotencyKeyReused,
    InvalidRequest,
    NotFound,
    NotPrimary,
    OutOfStock,
    Refused,
    Unavailable,
)
from bazar.http_app import build_app, json_response, read_body, require_token
from bazar.metrics import Metrics
from bazar.request import (
    idempotency_key,
    page_limit,
    patch_command,
    positive_id,
    purchase_quantity,
    search_topic,
)
from bazar.services.replica import decode_body
from bazar.transport import Transport, TransportError
from bazar.wire import (
    BookData,
    BookListData,
    CacheInfo,
    ClusterData,
    ClusterInfo,
    HealthData,
    HealthStatus,
    Heartbeat,
    Invalidate,
    InvalidateReply,
    Member,
    OrderData,
    OrderPage,
    PurchaseData,
    PurchaseReply,
    PurchaseRequest,
    ReplicaInfo,
    ReplicaStatus,
    TierInfo,
    UpdateResult,
    VersionedBook,
    VersionedBookList,
    View,
    encode,
)

T = TypeVar("T")
log = logging.getLogger("bazar.frontend")

_views_decoder = msgspec.json.Decoder(dict[str, View])


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class ViewStore:
    """The views file: written to a temporary file, fsynced, renamed, directory fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, cluster: Cluster) -> dict[str, View]:
        if self.path.exists():
            return _views_decoder.decode(self.path.read_bytes())
        views: dict[str, View] = {
            tier: initial_view(
                tier, tuple(Member(name=n.name, url=n.url) for n in cluster.replicas(tier))
            )
            for tier in REPLICATED_TIERS
        }
        self.save(views)
        return views

    def save(self, views: dict[str, View]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("wb") as handle:
            handle.write(msgspec.json.encode(views))
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class Frontend:
    def __init__(self, cluster: Cluster, secrets: Secrets) -> None:
        self.cluster = cluster
        self.limits = cluster.limits
        self.secrets = secrets
        self.transport = Transport(secrets.cluster_secret)
        # Heartbeats have their own connections: a pool full of purchases must not starve them.
        self.heartbeats = Transport(secrets.cluster_secret)
        self.view_store = ViewStore(Path(cluster.data_dir) / "frontend" / "views.json")
        self.views = ViewManager(self.view_store.load(cluster))
        self.balancer = RoundRobin()
        self.cache = Cache(entries_max=cluster.cache_entries_max, ttl_ms=cluster.cache_ttl_ms)
        self.cache_enabled = cluster.cache_enabled
        self.cache_ready = False  # until the catalog primary has told us its open write
        self.known_books: set[int] = set()  # ids seen in replica answers: the catalog's size
        self.metrics = Metrics()
        self.metrics.watch_cache(self.cache)
        self.openapi = openapi.openapi_json()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._view_lock = asyncio.Lock()

    # ---------------------------------------------------------------- app and lifecycle

    def app(self) -> ASGIApp:
        routes: list[BaseRoute] = [
            Route("/", self._index, methods=["GET"]),
            Route("/docs", self._docs, methods=["GET"]),
            Route("/openapi.json", self._openapi, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
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
        ]
        return self.metrics.middleware(build_app(routes, lifespan=self.lifespan))

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.transport.start()
        await self.heartbeats.start()
        self._heartbeat_task = asyncio.create_task(self._heartbeat_loop())
        try:
            yield
        finally:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
            await self.transport.close()
            await self.heartbeats.close()

    # ---------------------------------------------------------------- heartbeats and views

    async def _heartbeat_loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.heartbeat_once()
            except Exception:
                log.exception("heartbeat round failed")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.limits.heartbeat_ms / 1000 - elapsed))

    async def heartbeat_once(self) -> None:
        message = Heartbeat(views=dict(self.views.views))
        calls = [
            self._heartbeat(tier, node.name, node.url, message)
            for tier in REPLICATED_TIERS
            for node in self.cluster.replicas(tier)
        ]
        await asyncio.gather(*calls)

    async def _heartbeat(self, tier: str, name: str, url: str, message: Heartbeat) -> None:
        try:
            status = await self.heartbeats.call(
                "POST",
                url + "/internal/heartbeat",
                ReplicaStatus,
                body=message,
                timeout_ms=self.limits.heartbeat_timeout_ms,
            )
        except TransportError as error:
            self.views.on_failure(tier, name, definite=error.definite)
            return
        except BazarError:
            self.views.on_failure(tier, name, definite=True)
            return
        if tier == "catalog" and name == self.views.views[tier].primary:
            if status.invalidating is not None:
                # A write between its invalidation and its COMMIT, perhaps sent to a front
                # end that died since: apply it (once) before this one fills anything.
                self.cache.invalidate_once(status.invalidating.books, status.invalidating.version)
            self.cache_ready = True
        async with self._view_lock:
            new_view = self.views.on_status(tier, status, _monotonic_ms())
            if new_view is None:
                return
            views = {**self.views.views, tier: new_view}
            await asyncio.to_thread(self.view_store.save, views)  # fsync: not on the loop
            self.views.install(new_view)
            log.info(
                "transition=view tier=%s epoch=%d primary=%s",
                tier,
                new_view.epoch,
                new_view.primary,
            )

    def _primary_url(self, tier: str) -> str:
        view = self.views.views[tier]
        return view.url_of(view.primary)

    # ---------------------------------------------------------------- reads

    async def _read(self, tier: str, path: str, reply_type: type[T]) -> T:
        """One read, from the replicas in round-robin order, moving on when one fails; a
        replica that fails is skipped until it answers a heartbeat again.

        Raises: NotFound, InvalidRequest (the replica's definite answers), Unavailable.
        """
        view = self.views.views[tier]
        members = [view.primary, *view.backups]
        healthy = [name for name in members if self.views.state(tier, name) == "in_sync"]
        others = [name for name in members if name not in healthy]
        for name in self.balancer.order(healthy, others):
            try:
                reply = await self.transport.call(
                    "GET",
                    view.url_of(name) + path,
                    reply_type,
                    timeout_ms=self.limits.read_timeout_ms,
                )
                self.metrics.backend_reads.labels(tier, "ok").inc()
                return reply
            except (NotFound, InvalidRequest):
                self.metrics.backend_reads.labels(tier, "ok").inc()
                raise
            except (TransportError, BazarError) as error:
                self.metrics.backend_reads.labels(tier, "failed").inc()
                if isinstance(error, TransportError):  # unreachable: skip it until it answers
                    if self.views.state(tier, name) != "down":
                        log.warning("transition=replica_skipped node=%s error=%s", name, error)
                    self.views.on_failure(tier, name, definite=error.definite)
        raise Unavailable(f"no {tier} replica could answer")

    def _cached(self, key: str) -> Response | None:
        if not self.cache_enabled:
            return None
        body = self.cache.get(key, _monotonic_ms())
        return None if body is None else json_response(body)

    def _fill(
        self,
        key: str,
        body: bytes,
        version: tuple[int, int],
        books: tuple[int, ...],
        ready: bool,
    ) -> None:
        """`ready`: the front end had heard the catalog primary's open write when the read
        started; a read that started before may carry a value that write replaces."""
        if self.cache_enabled and ready:
            self.cache.fill(key, body, version, books, _monotonic_ms())

    async def _books_read(self, key: str, path: str) -> Response:
        """A list of books (search or all), cached under its logical key."""
        hit = self._cached(key)
        if hit is not None:
            return hit
        ready = self.cache_ready  # as the read starts: see _fill
        reply = await self._read("catalog", path, VersionedBookList)
        self.known_books.update(book.id for book in reply.data)
        body = encode(BookListData(data=reply.data))
        self._fill(key, body, reply.version, tuple(book.id for book in reply.data), ready)
        return json_response(body)

    async def _search_empty(self, request: Request) -> Response:
        raise InvalidRequest("a topic is required: /search/{topic}")

    async def _search(self, request: Request) -> Response:
        topic = search_topic(request.path_params["topic"], self.limits.topic_chars_max)
        # As a query parameter: in a path, a topic of "." or ".." would be normalised away.
        path = "/search?topic=" + quote(topic, safe="")
        return await self._books_read(topic_key(topic), path)

    async def _info_all(self, request: Request) -> Response:
        return await self._books_read(LIST_KEY, "/books")

    async def _info(self, request: Request) -> Response:
        book_id = positive_id(request.path_params["id"])
        key = book_key(book_id)
        hit = self._cached(key)
        if hit is not None:
            return hit
        ready = self.cache_ready
        reply = await self._read("catalog", f"/books/{book_id}", VersionedBook)
        self.known_books.add(book_id)
        body = encode(BookData(data=reply.data))
        self._fill(key, body, reply.version, (book_id,), ready)
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
        return json_response(await self._read("order", path, OrderPage))

    async def _order(self, request: Request) -> Response:
        order_id = request.path_params["id"]
        if not (0 < len(order_id) <= 64 and order_id.isascii() and order_id.isalnum()):
            raise NotFound("no such order")
        return json_response(await self._read("order", f"/orders/{order_id}", OrderData))

    # ---------------------------------------------------------------- writes

    async def _purchase(self, request: Request) -> Response:
        book_id = positive_id(request.path_params["id"])
        body = await read_body(request, self.limits.request_bytes_max)
        quantity = purchase_quantity(
            body, request.headers.get("content-type"), self.limits.quantity_max
        )
        key = idempotency_key(request.headers, self.limits.idempotency_key_chars_max)
        key = key or uuid.uuid4().hex
        # Every answer names the key, generated ones included, so that a client can retry
        # a 503 safely even if it sent none.
        try:
            return await self._purchase_with_key(book_id, quantity, key)
        except BazarError as error:
            error.headers["Idempotency-Key"] = key
            raise

    async def _purchase_with_key(self, book_id: int, quantity: int, key: str) -> Response:
        """Raises: OutOfStock, IdempotencyKeyReused, NotFound, Unavailable."""
        if book_id not in self.known_books:
            # Books are never deleted: once seen, always there. An unknown id is answered
            # 404 here, without replicated writes on the order tier.
            await self._read("catalog", f"/books/{book_id}", VersionedBook)
            self.known_books.add(book_id)
        purchase = PurchaseRequest(idempotency_key=key, book_id=book_id, quantity=quantity)
        try:
            reply = await self.transport.call(
                "POST",
                self._primary_url("order") + "/internal/purchase",
                PurchaseReply,
                body=purchase,
                timeout_ms=self.limits.write_timeout_ms,
            )
        except (TransportError, NotPrimary, Refused) as error:
            raise Unavailable(f"no order primary could take the purchase: {error}") from None
        headers = {"Idempotency-Key": key}
        if reply.replayed:
            headers["Idempotent-Replayed"] = "true"
        if reply.status == "completed":
            assert reply.order is not None
            return json_response(
                PurchaseData(data="Purchase done", order=reply.order), 200, headers
            )
        if reply.status == "out_of_stock":
            raise OutOfStock(f"book {book_id} has fewer than {quantity} in stock", headers=headers)
        if reply.status == "key_reused":
            raise IdempotencyKeyReused("this Idempotency-Key was used for another purchase")
        raise NotFound(f"no book {book_id}")

    async def _patch_book(self, request: Request) -> Response:
        require_token(request, self.secrets.admin_token, "admin token")
        book_id = positive_id(request.path_params["id"])
        body = await read_body(request, self.limits.request_bytes_max)
        command = patch_command(
            book_id, body, request.headers.get("content-type"), self.limits.stock_delta_abs_max
        )
        try:
            result = await self.transport.call(
                "POST",
                self._primary_url("catalog") + f"/internal/books/{book_id}",
                UpdateResult,
                body=command,
                timeout_ms=self.limits.write_timeout_ms,
            )
        except (TransportError, NotPrimary, Refused) as error:
            raise Unavailable(f"no catalog primary could take the update: {error}") from None
        if result.status == "not_found":
            raise NotFound(f"no book {book_id}")
        if result.status == "out_of_stock":
            raise OutOfStock(f"the stock of book {book_id} cannot go below 0")
        assert result.book is not None
        return json_response(BookData(data=result.book))

    # ---------------------------------------------------------------- cluster and pages

    def cluster_info(self) -> ClusterInfo:
        def tier_info(tier: str) -> TierInfo:
            view = self.views.views[tier]
            replicas = []
            for member in view.members:
                status = self.views.health[tier][member.name].status
                replicas.append(
                    ReplicaInfo(
                        name=member.name,
                        url=member.url,
                        role="primary" if member.name == view.primary else "backup",
                        state=self.views.state(tier, member.name),
                        pid=status.pid if status else None,
                        last_seq=status.last_seq if status else None,
                        commit_seq=status.commit_seq if status else None,
                    )
                )
            return TierInfo(epoch=view.epoch, primary=view.primary, replicas=replicas)

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
        for tier in REPLICATED_TIERS:
            if not self.views.primary_up(tier):
                raise Unavailable(f"the {tier} tier has no serving primary")
            if not self.views.writable(tier):
                raise Unavailable(f"a {tier} replica is down: writes wait for it")
        return json_response(HealthData(data=HealthStatus(status="ok")))

    async def _metrics(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    async def _openapi(self, request: Request) -> Response:
        return json_response(self.openapi)

    async def _docs(self, request: Request) -> Response:
        return Response(pages.page("docs"), media_type="text/html; charset=utf-8")

    async def _index(self, request: Request) -> Response:
        return Response(pages.page("index"), media_type="text/html; charset=utf-8")
