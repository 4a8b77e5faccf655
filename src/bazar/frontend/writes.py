"""Write routing: each write goes to its tier's current primary, made again by the
write-retry rule (`retry.py`) across a failover, and held (never refused) during a
switchover while the writes in flight drain."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from bazar import logs
from bazar.clock import monotonic_ms
from bazar.config import REPLICATED_TIERS, Limits
from bazar.frontend.views import ViewManager
from bazar.retry import unless_changed, write_to_primary

T = TypeVar("T")


class Writes:
    def __init__(self, views: ViewManager, limits: Limits) -> None:
        self.views = views
        self.limits = limits
        self.failover: dict[str, asyncio.Event] = {t: asyncio.Event() for t in REPLICATED_TIERS}
        self._gates: dict[str, asyncio.Event] = {t: asyncio.Event() for t in REPLICATED_TIERS}
        for gate in self._gates.values():
            gate.set()
        self._inflight: dict[str, int] = dict.fromkeys(REPLICATED_TIERS, 0)
        self._drained = asyncio.Event()

    def primary_changed(self, tier: str) -> None:
        """A view named a new primary: attempts at the old one are given up."""
        changed = self.failover[tier]
        self.failover[tier] = asyncio.Event()
        changed.set()

    async def write(self, tier: str, call: Callable[[str, int], Awaitable[T]]) -> tuple[T, bool]:
        """A write to the tier's primary: `call(primary's URL, timeout_ms)` makes one attempt.
        A definite refusal (not the primary, no lease, connection refused) is retried, on the
        new primary once a failover has named one, until `write_retry_deadline_ms`; so is a
        call given up because a failover replaced its primary or its batch was abandoned.
        Every write here carries an idempotency key (a purchase, an admin update), which
        makes a second attempt safe. Returns the reply and whether an earlier attempt may
        have run.

        Raises: WriteFailed.
        """
        gate = self._gates[tier]  # closed briefly by a switchover

        async def attempt(failover: asyncio.Event, timeout_ms: int) -> T:
            return await self._write_once(tier, call, failover)

        return await write_to_primary(
            attempt,
            lambda: self.failover[tier],
            deadline_s=time.monotonic() + self.limits.write_retry_deadline_ms / 1000,
            retry_ms=self.limits.replicate_retry_ms,
            before=gate.wait,
        )

    async def _write_once(
        self, tier: str, call: Callable[[str, int], Awaitable[T]], failover: asyncio.Event
    ) -> T:
        """One attempt, given up (outcome unknown) if a failover replaces its primary
        meanwhile, so that a dead primary costs a retry, not a timeout."""
        view = self.views.views[tier]
        logs.note("replica", view.primary)
        attempt = call(view.url_of(view.primary), self.limits.write_timeout_ms)
        self._inflight[tier] += 1
        try:
            return await unless_changed(attempt, failover, f"{tier} write")
        finally:
            self._inflight[tier] -= 1
            self._drained.set()

    @contextlib.asynccontextmanager
    async def holding(self, tiers: tuple[str, ...]) -> AsyncIterator[None]:
        """Hold new writes to `tiers` (they wait, they are not refused) and let the ones in
        flight finish, for a switchover."""
        for tier in tiers:
            self._gates[tier].clear()
        try:
            deadline_ms = monotonic_ms() + self.limits.write_timeout_ms
            while any(self._inflight[t] for t in tiers):
                self._drained.clear()
                remaining_s = (deadline_ms - monotonic_ms()) / 1000
                if remaining_s <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained.wait(), remaining_s)
            yield
        finally:
            for tier in tiers:
                self._gates[tier].set()
