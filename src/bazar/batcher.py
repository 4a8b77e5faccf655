"""Group commit across a hop: calls to one peer made while an earlier call is out travel
together in the next one (the order tier's sales to the catalog, the front end's purchases
to the order primary).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Generic, TypeVar

from bazar.config import Limits
from bazar.errors import BazarError
from bazar.transport import TransportError

Item = TypeVar("Item")
Out = TypeVar("Out")

log = logging.getLogger("bazar.batcher")
KEYED_ITEM_OVERHEAD_BYTES = 96  # a Sell's or a PurchaseRequest's JSON besides its key, and room


class Batcher(Generic[Item, Out]):
    """Group commit across a hop, pipelined: up to `depth` calls are out at once, and the
    calls made while they are all out travel together in the next one to come back. Under
    load one request carries many items and the next batch is already on its way (decoded,
    checked, queued at the receiver) while the previous one commits; at one client no item
    waits."""

    def __init__(
        self,
        send: Callable[[list[Item]], Awaitable[list[Out | Exception]]],
        items_max: int,
        depth: int = 1,
    ) -> None:
        assert items_max >= 1
        assert depth >= 1
        self._send = send
        self._items_max = items_max
        self._depth = depth
        self._queue: list[tuple[Item, asyncio.Future[Out]]] = []
        self._senders: set[asyncio.Task[None]] = set()

    async def call(self, item: Item, timeout_ms: int) -> Out:
        """Raises: TransportError (indefinite: no answer in time, the item may still be
        sent), what `send` raised for the whole batch, or this item's BazarError."""
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)  # a waiter that gave up leaves no warning
        self._queue.append((item, future))
        if len(self._senders) < self._depth:
            sender = asyncio.ensure_future(self._drain())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_ms / 1000)
        except TimeoutError:
            raise TransportError(f"no answer in {timeout_ms} ms", definite=False) from None

    async def _drain(self) -> None:
        """One of the `depth` senders: it takes what has queued each time it is free."""
        while self._queue:
            batch = self._queue[: self._items_max]
            del self._queue[: len(batch)]
            try:
                results = await self._send([item for item, _ in batch])
                if len(results) != len(batch):
                    raise TransportError("a reply for another batch size", definite=False)
            except (TransportError, BazarError) as error:
                _fail(batch, error)
                continue
            except Exception as error:  # a bug or a closed session: never strand a caller
                log.exception("batched call failed")
                _fail(batch, TransportError(f"batched call failed: {error}", definite=False))
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        # (cancelled at shutdown: each caller's timeout answers it)


def keyed_items_per_call(limits: Limits, overhead_bytes: int = KEYED_ITEM_OVERHEAD_BYTES) -> int:
    """How many keyed items (sales, purchases) always fit one request body, whatever their
    keys: a printable ASCII key is at most twice its length in JSON."""
    item_bytes_max = 2 * limits.idempotency_key_chars_max + overhead_bytes
    return max(1, min(limits.batch_commands_max, limits.request_bytes_max // item_bytes_max))


class ToPrimary(Generic[Item, Out]):
    """A `Batcher` for the current primary only: a new primary gets a new one, so a call
    stuck at a replaced primary holds no later item up."""

    def __init__(
        self, send: Callable[[str, list[Item]], Awaitable[list[Out | Exception]]], limits: Limits
    ) -> None:
        self._send = send
        self._items_max = keyed_items_per_call(limits)
        self._url = ""
        self._depth = limits.calls_in_flight_max
        self._batcher: Batcher[Item, Out] | None = None

    async def call(self, url: str, item: Item, timeout_ms: int) -> Out:
        """Raises: as `Batcher.call`."""
        if self._batcher is None or url != self._url:
            self._url = url
            self._batcher = Batcher(partial(self._send, url), self._items_max, self._depth)
        return await self._batcher.call(item, timeout_ms)


def _fail(batch: list[tuple[Any, asyncio.Future[Any]]], error: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
