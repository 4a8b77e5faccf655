"""An order replica; its primary runs purchases end to end.

A purchase (idempotency key K) is two replicated writes in sequence: the catalog primary
sells under K (it records the sale and its outcome under the key, and deduplicates), then
`RecordOrder(K)` is replicated here. Sales travel to the catalog in batches: those that
arrive while a call is out go together in the next one. Requests with a key already in
flight here wait for the first one and are answered as replays. A reconciler on the primary
pages through the catalog's completed sales and records the order of any that has none (a
crash, a failover or an unreachable replica between the two writes), so every sale ends
with exactly one order.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
import uuid
from functools import partial
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from bazar.batcher import ToPrimary
from bazar.config import Cluster, Node, Secrets
from bazar.errors import (
    Abandoned,
    BazarError,
    InvalidRequest,
    NotFound,
    NotPrimary,
    Refused,
    Unavailable,
)
from bazar.http_app import decode_body, json_response
from bazar.order import machine
from bazar.outcomes import outcome_of, settle
from bazar.replication.process import ReplicaProcess
from bazar.request import idempotency_key, page_limit, positive_id
from bazar.retry import WriteFailed, unless_changed, write_to_primary
from bazar.transport import TransportError
from bazar.wire import (
    OrderData,
    OrderPage,
    OrderResult,
    PurchaseBatch,
    PurchaseOutcome,
    PurchaseOutcomes,
    PurchaseReply,
    PurchaseRequest,
    Reconciled,
    RecordOrder,
    Row,
    SaleMark,
    SaleOutcomes,
    SaleRecord,
    SaleResult,
    SalesPage,
    Sell,
    SellBatch,
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
        self.sales: ToPrimary[Sell, SaleResult] = ToPrimary(self._sell_batch, self.limits)
        self.mark = SaleMark(seq=0, key="")  # the reconciler's, see reconcile()
        self.unsaved = 0
        self.process.background.append(self._reconcile_loop)

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
        batch = await decode_body(request, PurchaseBatch, self.limits.request_bytes_max)
        if not 1 <= len(batch.purchases) <= self.limits.batch_commands_max:
            raise InvalidRequest(f"from 1 to {self.limits.batch_commands_max} purchases per call")
        for purchase in batch.purchases:
            positive_id(str(purchase.book_id))
            idempotency_key(
                {"idempotency-key": purchase.idempotency_key},
                self.limits.idempotency_key_chars_max,
            )
            if not 1 <= purchase.quantity <= self.limits.quantity_max:
                raise InvalidRequest(f"the quantity must be from 1 to {self.limits.quantity_max}")
        settled = await asyncio.gather(*(settle(self.purchase(p)) for p in batch.purchases))
        outcomes = [PurchaseOutcome(reply=reply, error=error) for reply, error in settled]
        return json_response(PurchaseOutcomes(outcomes=outcomes))

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
        self.runtime.check_writable()
        done = machine.order_by_key(self.process.store.reader, request.idempotency_key)
        if done is not None:
            if (done.book_id, done.quantity) != (request.book_id, request.quantity):
                return PurchaseReply(status="key_reused")
            return PurchaseReply(status="completed", order=done, replayed=True)
        sale = await self._sell(request)
        if sale.status in ("key_reused", "not_found"):
            return PurchaseReply(status=sale.status)
        if sale.status == "out_of_stock":
            return PurchaseReply(status="out_of_stock", replayed=sale.replayed)
        try:
            recorded = await self._record(request.idempotency_key, request, sale.unit_cost_cents)
        except (Refused, NotPrimary):
            # The sale happened but its order is not recorded here. Abandoned (an unknown
            # outcome, not a refusal): the front end retries the key on the order primary,
            # which records it, unless the reconciler was first.
            raise Abandoned("the sale is done and its order not yet recorded") from None
        if not recorded.replayed:
            log.info("bought book %s", sale.title)
        return PurchaseReply(
            status="completed", order=recorded.order, replayed=recorded.replayed, title=sale.title
        )

    async def _record(
        self, key: str, sold: PurchaseRequest | SaleRecord, unit_cost_cents: int
    ) -> OrderResult:
        """Raises: NotPrimary, Refused, Abandoned, Unavailable."""
        result: OrderResult = await self.runtime.submit(
            RecordOrder(
                idempotency_key=key,
                book_id=sold.book_id,
                quantity=sold.quantity,
                unit_cost_cents=unit_cost_cents,
                order_id=uuid.uuid4().hex,
                created_at=now_rfc3339(),
            )
        )
        return result

    async def _sell(self, request: PurchaseRequest) -> SaleResult:
        """The catalog sale under the same key (it deduplicates, so retrying is safe): a
        refusal, or an attempt given up because a failover replaced the catalog primary,
        is retried on the new primary until `sell_timeout_ms`.

        Raises: Unavailable (not sold, or the outcome is unknown: then the reconciler
        records the order if it sold).
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
            )
        except WriteFailed as failed:
            if failed.uncertain:
                raise Unavailable(f"the sale's outcome is unknown: {failed}") from None
            raise Unavailable(f"the catalog cannot take sales now: {failed}") from None
        except BazarError as error:  # a definite refusal of the whole call: nothing sold
            raise Unavailable(f"the catalog refused the sale: {error.message}") from None
        return sale

    async def _sell_once(self, sell: Sell, failover: asyncio.Event, timeout_ms: int) -> SaleResult:
        view = self.runtime.view_of("catalog")
        call = self.sales.call(view.url_of(view.primary) + "/internal/sell", sell, timeout_ms)
        return await unless_changed(call, failover, "sale")

    async def _sell_batch(self, url: str, sells: list[Sell]) -> list[SaleResult | Exception]:
        reply = await self.process.transport.call(
            "POST",
            url,
            SaleOutcomes,
            body=SellBatch(sells=sells),
            timeout_ms=self.limits.sell_timeout_ms,
        )
        return [outcome_of(outcome.result, outcome.error) for outcome in reply.outcomes]

    # ---------------------------------------------------------------- reconciler

    async def _reconcile_loop(self) -> None:
        """Record the order of every catalog sale that has none, on the primary only."""
        while True:
            await asyncio.sleep(self.limits.recovery_interval_ms / 1000)
            if self.runtime.core.role != "primary":
                continue
            try:
                await self.reconcile()
            except (BazarError, TransportError) as error:
                log.info("reconciliation deferred: %s", error)
            except Exception:
                log.exception("reconciliation failed")

    async def reconcile(self) -> None:
        """Page through the catalog's completed sales after the mark; record the missing
        orders; move the mark up to the first sale still in flight here (its own request
        records it, or the next round does if that request fails).

        The mark lives in memory (once true, "every sale up to here has its order" stays
        true); it is replicated (`Reconciled`) only after recording orders or every
        `page_limit_max` sales, so a quiet cluster stays quiet and a new primary rescans a
        bounded tail.

        Raises: BazarError, TransportError.
        """
        reader = self.process.store.reader
        saved = machine.reconciled_mark(reader)
        mark = max(saved, self.mark)
        limit = self.limits.page_limit_max
        while True:
            view = self.runtime.view_of("catalog")
            page = await self.process.transport.call(
                "GET",
                view.url_of(view.primary)
                + f"/internal/sales?seq={mark.seq}&key={quote(mark.key, safe='')}&limit={limit}",
                SalesPage,
                timeout_ms=self.limits.read_timeout_ms,
            )
            through, missing = mark, []
            for sale in page.data:
                if sale.mark.key in self.inflight:
                    break
                if machine.order_by_key(reader, sale.mark.key) is None:
                    missing.append(sale)
                through = sale.mark
                self.unsaved += 1
            if missing:
                results = await asyncio.gather(
                    *(self._record(sale.mark.key, sale, sale.unit_cost_cents) for sale in missing)
                )
                for sale, result in zip(missing, results, strict=True):
                    if not result.replayed:
                        log.info("bought book %s", sale.title)
                log.info("transition=orders_reconciled count=%d", len(missing))
            self.mark = through
            if through > saved and (missing or self.unsaved >= limit):
                await self.runtime.submit(Reconciled(through=through))
                saved, self.unsaved = through, 0
            if through != (page.data[-1].mark if page.data else mark) or len(page.data) < limit:
                return
            mark = through
