"""A catalog replica: books and sales, replicated; reads from any replica in the view.

Reads on a backup follow the CRAQ rule: a book that a staged (not yet known committed) entry
writes is checked with the primary, and answered with the committed row image.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from functools import partial

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from bazar.catalog import machine, reads, seed
from bazar.config import Cluster, Limits, Node, Secrets
from bazar.errors import InvalidRequest, NotFound, NotPrimary
from bazar.http_app import decode_body, json_response
from bazar.money import COST_CENTS_MAX
from bazar.outcomes import settle
from bazar.replication.process import ReplicaProcess
from bazar.request import INT64_DIGITS, idempotency_key, page_limit, positive_id
from bazar.wire import (
    Entry,
    Invalidate,
    ReadDelay,
    ReadDelayState,
    Row,
    SaleMark,
    SaleOutcome,
    SaleOutcomes,
    SalesPage,
    Sell,
    SellBatch,
    UpdateBook,
    Upsert,
    Version,
    VersionedBook,
    VersionedBookList,
)

log = logging.getLogger("bazar.catalog")


def overlay_books(rows: dict[int, Row], entries: list[Entry]) -> None:
    """Replace rows by the committed images carried by `entries` (in seq order)."""
    for entry in entries:
        for change in entry.changes:
            if isinstance(change, Upsert) and change.table == "books":
                book_id = int(change.row["id"])  # type: ignore[arg-type]
                if book_id in rows:
                    rows[book_id] = change.row


def invalidation(entries: Sequence[Entry]) -> Invalidate | None:
    """The catalog's pre-commit effect: before a write (or a promoted suffix) commits, the
    front end drops what shows the books it changes and refuses any fill older than it, so
    no read that starts after the COMMIT can find the old value in the cache. Until the
    COMMIT the primary's lease requests repeat it too, for a front end that restarts
    meanwhile (its cache fills only after it has heard it)."""
    books = sorted(
        {
            int(change.row["id"])  # type: ignore[arg-type]
            for entry in entries
            for change in entry.changes
            if isinstance(change, Upsert) and change.table == "books"
        }
    )
    if not books:
        return None
    last = entries[-1]
    return Invalidate(books=tuple(books), version=(last.epoch, last.seq))


def check_sell(command: Sell, limits: Limits) -> None:
    """Internal writes are checked like public ones: a command the state machine cannot
    execute must never reach a batch (it would fail every command batched with it).

    Raises: InvalidRequest.
    """
    positive_id(str(command.book_id))
    idempotency_key({"idempotency-key": command.idempotency_key}, limits.idempotency_key_chars_max)
    if not 1 <= command.quantity <= limits.quantity_max:
        raise InvalidRequest(f"the quantity must be an integer from 1 to {limits.quantity_max}")


def check_update(command: UpdateBook, limits: Limits) -> None:
    """Raises: InvalidRequest."""
    if command.idempotency_key is not None:
        key = {"idempotency-key": command.idempotency_key}
        idempotency_key(key, limits.idempotency_key_chars_max)
    if command.cost_cents is not None and not 0 <= command.cost_cents <= COST_CENTS_MAX:
        raise InvalidRequest("cost_cents out of range")
    if abs(command.stock_delta) > limits.stock_delta_abs_max:
        raise InvalidRequest(f"|stock_delta| must be at most {limits.stock_delta_abs_max}")


class CatalogService:
    def __init__(self, cluster: Cluster, node: Node, secrets: Secrets) -> None:
        self.process = ReplicaProcess(
            cluster=cluster,
            node=node,
            secrets=secrets,
            schema=machine.SCHEMA,
            machine=machine.CatalogMachine(),
            notify=invalidation,
        )
        books = seed.load_seed(cluster.catalog_file)
        seeded = self.process.store.write_blocking(partial(seed.seed, books=books))
        if not seeded and cluster.catalog_file:
            log.warning("catalog file ignored: %s already holds books", node.name)
        self.runtime = self.process.runtime
        self.limits = cluster.limits
        self.test_hooks = cluster.test_hooks
        self.read_delays: dict[int, ReadDelay] = {}
        self.reads_waiting = 0
        self.release = asyncio.Event()

    def app(self) -> ASGIApp:
        internal = self.process.internal
        routes: list[BaseRoute] = [
            Route("/books", internal(self._books), methods=["GET"]),
            Route("/books/{id}", internal(self._book), methods=["GET"]),
            Route("/search", internal(self._search), methods=["GET"]),
            Route("/search/{topic:path}", internal(self._search), methods=["GET"]),
            Route("/internal/sell", internal(self._sell), methods=["POST"]),
            Route("/internal/sales", internal(self._sales), methods=["GET"]),
            Route("/internal/books/{id}", internal(self._update), methods=["POST"]),
        ]
        if self.test_hooks:
            routes.append(
                Route(
                    "/internal/test/read-delay", internal(self._read_delay), methods=["GET", "POST"]
                )
            )
        return self.process.app(routes)

    async def _read_delay(self, request: Request) -> Response:
        """Test hook: hold the next `count` reads of a book after they have read it, until
        released (`count` 0) or `delay_ms` has passed, to make late fills happen on demand."""
        if request.method == "POST":
            delay = await decode_body(request, ReadDelay, self.limits.request_bytes_max)
            if not 0 <= delay.delay_ms <= self.limits.test_read_delay_ms_max:
                raise InvalidRequest("delay_ms out of range")
            if delay.count == 0:
                self.read_delays.pop(delay.book_id, None)
                self.release.set()
            else:
                self.read_delays[delay.book_id] = delay
        return json_response(ReadDelayState(waiting=self.reads_waiting))

    async def _delay_read(self, book_id: int) -> None:
        delay = self.read_delays.pop(book_id, None)
        if delay is None:
            return
        if delay.count > 1:
            self.read_delays[book_id] = ReadDelay(
                book_id=book_id, delay_ms=delay.delay_ms, count=delay.count - 1
            )
        self.release.clear()
        self.reads_waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), delay.delay_ms / 1000)
        finally:
            self.reads_waiting -= 1

    def _version(self) -> Version:
        point = self.runtime.commit_point()
        return (point.epoch, point.commit_seq)

    async def _committed_rows(self, rows: list[Row], all_books: bool) -> dict[int, Row]:
        by_id = {int(row["id"]): row for row in rows}  # type: ignore[arg-type]
        keys: set[int | str] | None = None if all_books else set(by_id)
        overlay = await self.runtime.committed_overlay("books", keys)
        overlay_books(by_id, overlay)
        return by_id

    async def _books(self, request: Request) -> Response:
        self.runtime.readable()
        version = self._version()
        rows = await self._committed_rows(reads.read_books(self.process.store.reader), True)
        books = [reads.book_from_row(rows[key]) for key in sorted(rows)]
        return json_response(VersionedBookList(data=books, version=version))

    async def _book(self, request: Request) -> Response:
        self.runtime.readable()
        book_id = positive_id(request.path_params["id"])
        row = reads.read_book(self.process.store.reader, book_id)
        if row is None:
            raise NotFound(f"no book {book_id}")
        rows = await self._committed_rows([row], False)
        committed = rows[book_id]
        if self.read_delays:
            await self._delay_read(book_id)
        return json_response(
            VersionedBook(data=reads.book_from_row(committed), version=reads.row_version(committed))
        )

    async def _search(self, request: Request) -> Response:
        self.runtime.readable()
        topic = request.path_params.get("topic") or request.query_params.get("topic", "")
        if not topic:
            raise InvalidRequest("a topic is required")
        version = self._version()
        rows = [
            row
            for row in reads.read_books(self.process.store.reader)
            if reads.matches_topic(row, topic)
        ]
        by_id = await self._committed_rows(rows, False)
        books = [reads.book_from_row(by_id[key]) for key in sorted(by_id)]
        return json_response(VersionedBookList(data=books, version=version))

    async def _sell(self, request: Request) -> Response:
        batch = await decode_body(request, SellBatch, self.limits.request_bytes_max)
        if not 1 <= len(batch.sells) <= self.limits.batch_commands_max:
            raise InvalidRequest(f"from 1 to {self.limits.batch_commands_max} sales per call")
        for command in batch.sells:
            check_sell(command, self.limits)
        # Submitted together, so they join one replicated batch.
        settled = await asyncio.gather(*(settle(self.runtime.submit(c)) for c in batch.sells))
        outcomes = [SaleOutcome(result=result, error=error) for result, error in settled]
        return json_response(SaleOutcomes(outcomes=outcomes))

    async def _sales(self, request: Request) -> Response:
        """Completed sales after a mark, for the order tier's reconciler: from the primary
        only (so the page holds every sale committed before it was read)."""
        if self.runtime.core.role != "primary":
            raise NotPrimary(f"{self.process.node.name} is not the primary")
        self.runtime.readable()
        params = request.query_params
        seq = params.get("seq", "0")
        if not (seq.isascii() and seq.isdigit() and len(seq) <= INT64_DIGITS - 1):
            raise InvalidRequest("seq must be a non-negative integer")
        limit = page_limit(
            params.get("limit"), self.limits.page_limit_default, self.limits.page_limit_max
        )
        after = SaleMark(seq=int(seq), key=params.get("key", ""))
        sales = reads.read_sales(self.process.store.reader, after, limit)
        return json_response(SalesPage(data=sales))

    async def _update(self, request: Request) -> Response:
        command = await decode_body(request, UpdateBook, self.limits.request_bytes_max)
        if command.book_id != positive_id(request.path_params["id"]):
            raise InvalidRequest("the body and the path name different books")
        check_update(command, self.limits)
        return json_response(await self.runtime.submit(command))
