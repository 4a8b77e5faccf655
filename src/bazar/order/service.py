"""An order replica; its primary runs purchases end to end.

A purchase (idempotency key K): `BeginPurchase(K)` is replicated (pending), the catalog
primary sells under the same key (it deduplicates), then `FinishPurchase(K, outcome)` is
replicated. Requests with a key already in flight here wait for the first one and are
answered as replays. A recovery loop on the primary finishes purchases left pending by a
crash or an unreachable catalog, so every sale ends with exactly one order.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
import uuid
from functools import partial

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from bazar.config import Cluster, Node, Secrets
from bazar.errors import (
    BazarError,
    InvalidRequest,
    NotFound,
    NotPrimary,
    Refused,
    Unavailable,
)
from bazar.http_app import json_response
from bazar.order import machine
from bazar.replication.process import ReplicaProcess, decode_body
from bazar.request import idempotency_key, page_limit, positive_id
from bazar.transport import WriteFailed, unless_changed, write_to_primary
from bazar.wire import (
    BeginPurchase,
    BeginResult,
    FinishPurchase,
    FinishResult,
    OrderData,
    OrderPage,
    PurchaseReply,
    PurchaseRequest,
    Row,
    SaleResult,
    Sell,
    Upsert,
)

log = logging.getLogger("bazar.order")


def now_rfc3339() -> str:
    return (
        datetime.datetime.now(datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class OrderService:
    def __init__(self, cluster: Cluster, node: Node, secrets: Secrets) -> None:
        self.process = ReplicaProcess(
            cluster=cluster,
            node=node,
            secrets=secrets,
            schema=machine.SCHEMA,
            machine=machine.OrderMachine(),
        )
        self.runtime = self.process.runtime
        self.limits = cluster.limits
        self.inflight: dict[str, tuple[PurchaseRequest, asyncio.Future[PurchaseReply]]] = {}
        self.process.background.append(self._recovery_loop)

    def app(self) -> ASGIApp:
        internal = self.process.internal
        routes: list[BaseRoute] = [
            Route("/orders", internal(self._orders), methods=["GET"]),
            Route("/orders/{id}", internal(self._order), methods=["GET"]),
            Route("/internal/purchase", internal(self._purchase), methods=["POST"]),
        ]
        return self.process.app(routes)

    # ---------------------------------------------------------------- reads

    async def _orders(self, request: Request) -> Response:
        self.runtime.readable()
        limit = page_limit(
            request.query_params.get("limit"),
            self.limits.page_limit_default,
            self.limits.page_limit_max,
        )
        after = request.query_params.get("after")
        page = machine.read_page(self.process.store.reader, limit, after, [])
        if page is None or page[1] is None:
            # The page reaches past what is applied here: committed orders staged on this
            # replica may belong to it (a full page never needs the primary).
            unapplied = await self._committed_orders(None)
            page = machine.read_page(self.process.store.reader, limit, after, unapplied)
        if page is None:
            raise InvalidRequest("`after` names no order")
        orders, next_id = page
        return json_response(OrderPage(data=orders, next=next_id))

    async def _order(self, request: Request) -> Response:
        self.runtime.readable()
        order_id = request.path_params["id"]
        unapplied = await self._committed_orders({order_id})
        order = machine.read_order(self.process.store.reader, order_id, unapplied)
        if order is None:
            raise NotFound("no such order")
        return json_response(OrderData(data=order))

    async def _committed_orders(self, ids: set[int | str] | None) -> list[Row]:
        """Orders that staged entries hold and the primary has committed (CRAQ, as for
        books): a backup answers with every acknowledged order."""
        entries = await self.runtime.committed_overlay("orders", ids)
        return [
            change.row
            for entry in entries
            for change in entry.changes
            if isinstance(change, Upsert) and change.table == "orders"
        ]

    # ---------------------------------------------------------------- purchases

    async def _purchase(self, request: Request) -> Response:
        purchase = await decode_body(request, PurchaseRequest, self.limits.request_bytes_max)
        positive_id(str(purchase.book_id))
        idempotency_key(
            {"idempotency-key": purchase.idempotency_key}, self.limits.idempotency_key_chars_max
        )
        if not 1 <= purchase.quantity <= self.limits.quantity_max:
            raise InvalidRequest(f"the quantity must be from 1 to {self.limits.quantity_max}")
        return json_response(await self.purchase(purchase))

    async def purchase(self, request: PurchaseRequest) -> PurchaseReply:
        """Run (or join) the purchase under `request.idempotency_key`.

        Raises: NotPrimary, Unavailable.
        """
        running = self.inflight.get(request.idempotency_key)
        if running is not None:
            first, future = running
            if (first.book_id, first.quantity) != (request.book_id, request.quantity):
                return PurchaseReply(status="key_reused")
            reply = await asyncio.shield(future)
            return PurchaseReply(
                status=reply.status, order=reply.order, replayed=True, title=reply.title
            )
        future = asyncio.get_running_loop().create_future()
        self.inflight[request.idempotency_key] = (request, future)
        try:
            reply = await self._run(request)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # the waiters, if any, re-raise it; none is also fine
            raise
        finally:
            del self.inflight[request.idempotency_key]
        future.set_result(reply)
        return reply

    async def _run(self, request: PurchaseRequest) -> PurchaseReply:
        begin: BeginResult = await self.runtime.submit(
            BeginPurchase(
                idempotency_key=request.idempotency_key,
                book_id=request.book_id,
                quantity=request.quantity,
                created_at=now_rfc3339(),
            )
        )
        if begin.status == "key_reused":
            return PurchaseReply(status="key_reused")
        if begin.status == "completed":
            return PurchaseReply(status="completed", order=begin.order, replayed=True)
        if begin.status == "out_of_stock":
            return PurchaseReply(status="out_of_stock", replayed=True)
        try:
            sale = await self._sell(request)
        except Refused as refused:
            if begin.status == "started":
                # This was the only attempt and it definitely did not sell: forget the
                # purchase, so that nothing sells it later on its own; a retry with the same
                # key starts afresh. An earlier attempt (status pending) may still sell, so
                # then the purchase stays pending for the recovery loop, as it does if this
                # very forgetting fails.
                await self._forget(request.idempotency_key)
            raise Unavailable(f"the catalog cannot take sales now: {refused.message}") from None
        if sale.status == "key_reused":
            return PurchaseReply(status="key_reused")
        try:
            finish: FinishResult = await self.runtime.submit(
                FinishPurchase(
                    idempotency_key=request.idempotency_key,
                    outcome=sale.status,
                    unit_cost_cents=sale.unit_cost_cents,
                    order_id=uuid.uuid4().hex,
                )
            )
        except Refused:
            # The sale happened; the order is recorded later by the recovery loop.
            raise Unavailable("the order will be recorded shortly; retry with the key") from None
        if finish.status == "completed":
            log.info("bought book %s", sale.title)
        assert finish.status != "aborted"
        return PurchaseReply(status=finish.status, order=finish.order, title=sale.title)

    async def _forget(self, key: str) -> None:
        """Raises: Unavailable (the purchase stays pending)."""
        try:
            await self.runtime.submit(FinishPurchase(idempotency_key=key, outcome="aborted"))
        except (Refused, NotPrimary) as error:
            raise Unavailable(f"the purchase stays pending: {error.message}") from None

    async def _sell(self, request: PurchaseRequest) -> SaleResult:
        """The catalog sale under the same key (it deduplicates, so retrying is safe): a
        refusal, or an attempt given up because a failover replaced the catalog primary,
        is retried on the new primary until `sell_timeout_ms`.

        Raises: Refused (definitely not sold), Unavailable (outcome unknown: the purchase
        stays pending and the recovery loop finishes it).
        """
        sell = Sell(
            idempotency_key=request.idempotency_key,
            book_id=request.book_id,
            quantity=request.quantity,
        )
        try:
            sale, _ = await write_to_primary(
                partial(self._sell_once, sell),
                lambda: self.runtime.failover("catalog"),
                deadline_s=time.monotonic() + self.limits.sell_timeout_ms / 1000,
                retry_ms=self.limits.replicate_retry_ms,
                keyed=True,
            )
        except WriteFailed as failed:
            if failed.uncertain:
                raise Unavailable(f"the sale's outcome is unknown: {failed}") from None
            raise Refused(f"the catalog primary cannot sell: {failed}") from None
        return sale

    async def _sell_once(self, sell: Sell, failover: asyncio.Event, timeout_ms: int) -> SaleResult:
        view = self.runtime.view_of("catalog")
        call = self.process.transport.call(
            "POST",
            view.url_of(view.primary) + "/internal/sell",
            SaleResult,
            body=sell,
            timeout_ms=timeout_ms,
        )
        return await unless_changed(call, failover, "sale")

    async def _recovery_loop(self) -> None:
        """Finish purchases left pending (crash, unreachable catalog), on the primary only."""
        while True:
            await asyncio.sleep(self.limits.recovery_interval_ms / 1000)
            if self.runtime.core.role != "primary":
                continue
            pending = machine.pending_purchases(
                self.process.store.reader, self.limits.batch_commands_max
            )
            for begin in pending:
                if begin.idempotency_key in self.inflight:
                    continue
                request = PurchaseRequest(
                    idempotency_key=begin.idempotency_key,
                    book_id=begin.book_id,
                    quantity=begin.quantity,
                )
                try:
                    await self.purchase(request)
                except BazarError as error:
                    log.info("recovery of %s deferred: %s", begin.idempotency_key, error.message)
                    break
                except Exception:
                    log.exception("recovery of %s failed", begin.idempotency_key)
                    break
