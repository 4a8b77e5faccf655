"""Calls between processes: one aiohttp session per process, keep-alive, a timeout on every
call, and the cluster secret on every request.

A failure is a `TransportError`; `definite` is True only when the request cannot have reached
the peer (the connection was refused), so callers never report a definite error for a write
whose outcome is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Generic, TypeVar

import aiohttp
import msgspec

from bazar.config import Limits
from bazar.errors import ERRORS_BY_CODE, Abandoned, BazarError, NotPrimary, Refused, Unavailable
from bazar.wire import ErrorBody, ErrorDetail, encode

T = TypeVar("T")
Item = TypeVar("Item")
Out = TypeVar("Out")

log = logging.getLogger("bazar.transport")
CONNECTIONS_MAX = 256  # a process's connections to all its peers together (aiohttp's pool)
KEYED_ITEM_OVERHEAD_BYTES = 96  # a Sell's or a PurchaseRequest's JSON besides its key, and room
_error_decoder = msgspec.json.Decoder(ErrorBody)


class TransportError(Exception):
    def __init__(self, message: str, *, definite: bool) -> None:
        super().__init__(message)
        self.definite = definite


class Transport:
    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=CONNECTIONS_MAX, keepalive_timeout=60, ttl_dns_cache=None
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"Authorization": f"Bearer {self._secret}"},
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self,
        method: str,
        url: str,
        reply_type: type[T],
        *,
        timeout_ms: int,
        body: object | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> T:
        """One request; a 2xx body decodes as `reply_type`, a JSON error as its BazarError.

        Raises: TransportError (no usable answer), BazarError (the peer's error).
        """
        session = self._session
        assert session is not None, "Transport.start() first"
        data = encode(body) if body is not None else raw
        send_headers = {"Content-Type": "application/json"} if body is not None else {}
        if raw is not None:
            send_headers["Content-Type"] = "application/octet-stream"
        send_headers.update(headers or {})
        timeout = aiohttp.ClientTimeout(total=timeout_ms / 1000)
        try:
            async with session.request(
                method, url, data=data, headers=send_headers, timeout=timeout
            ) as response:
                payload = await response.read()
                status = response.status
        except aiohttp.ClientConnectorError as error:
            raise TransportError(f"{url}: {error}", definite=True) from error
        except (aiohttp.ClientError, TimeoutError) as error:
            raise TransportError(
                f"{url}: {type(error).__name__} {error}", definite=False
            ) from error
        if 200 <= status < 300:
            try:
                return msgspec.json.decode(payload, type=reply_type)
            except msgspec.DecodeError as error:
                raise TransportError(f"{url}: bad reply: {error}", definite=False) from error
        raise _peer_error(url, status, payload)


def _peer_error(url: str, status: int, payload: bytes) -> BazarError | TransportError:
    try:
        detail = _error_decoder.decode(payload).error
    except msgspec.DecodeError:
        return TransportError(f"{url}: HTTP {status}", definite=False)
    error_class = ERRORS_BY_CODE.get(detail.code)
    if error_class is None:
        return TransportError(f"{url}: HTTP {status} {detail.code}", definite=False)
    return error_class(detail.message)


async def unless_changed(call: Awaitable[T], changed: asyncio.Event, what: str) -> T:
    """Await `call`, but give it up as soon as `changed` is set (a failover replaced the
    primary it was sent to): its outcome is then unknown.

    Raises: TransportError (indefinite) when given up, and whatever `call` raises.
    """
    task = asyncio.ensure_future(call)
    waiter = asyncio.ensure_future(changed.wait())
    try:
        await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not task.done():
        task.cancel()
        raise TransportError(f"{what}: the primary changed during the call", definite=False)
    return task.result()


class WriteFailed(Exception):
    """A write to a primary that `write_to_primary` gave up on: `error` is the last
    failure; `uncertain` whether any attempt may have taken effect."""

    def __init__(self, error: Exception, *, uncertain: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.uncertain = uncertain


async def write_to_primary(
    attempt: Callable[[asyncio.Event, int], Awaitable[T]],
    failover: Callable[[], asyncio.Event],
    *,
    deadline_s: float,
    retry_ms: int,
    keyed: bool,
    before: Callable[[], Awaitable[object]] | None = None,
) -> tuple[T, bool]:
    """A write to a tier's primary, across a failover. `attempt(failover event, timeout_ms)`
    makes one call (given up when the event is set). A definite refusal (not the primary,
    no lease, connection refused) is retried, on the new primary once a failover has named
    one, until `deadline_s` (on `time.monotonic`); `before()` is awaited ahead of each
    attempt (a switchover's hold). So is retried an attempt whose outcome is
    unknown because its primary was replaced or rolled its batch back, but only for a
    `keyed` write (the idempotency key makes a second attempt safe). Returns the reply and
    whether an earlier attempt may have taken effect.

    Raises: WriteFailed.
    """
    uncertain = False
    while True:
        if before is not None:
            await before()
        event = failover()
        timeout_ms = max(1, int((deadline_s - time.monotonic()) * 1000))
        try:
            return await attempt(event, timeout_ms), uncertain
        except (NotPrimary, Refused) as error:
            last: Exception = error
        except Abandoned as error:
            uncertain, last = True, error
            if not keyed:
                raise WriteFailed(error, uncertain=True) from None
        except TransportError as error:
            uncertain, last = uncertain or not error.definite, error
            if not (error.definite or (keyed and event.is_set())):
                raise WriteFailed(error, uncertain=uncertain) from None
        if time.monotonic() >= deadline_s:
            raise WriteFailed(last, uncertain=uncertain)
        if not event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), retry_ms / 1000)


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


async def settle(call: Awaitable[T]) -> tuple[T | None, ErrorDetail | None]:
    """The receiving side of `outcome_of`: one item's result, or its error as a detail, so
    that one item's refusal does not fail the others of its batch."""
    try:
        return await call, None
    except BazarError as error:
        return None, ErrorDetail(code=error.code, message=error.message)


def outcome_of(result: T | None, error: ErrorDetail | None) -> T | Exception:
    """One item of a batched reply: its result, or its error as the BazarError it names."""
    if result is not None:
        return result
    if error is None:
        return TransportError("an item with neither result nor error", definite=False)
    return ERRORS_BY_CODE.get(error.code, Unavailable)(error.message)


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
