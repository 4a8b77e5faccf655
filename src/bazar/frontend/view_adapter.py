"""The view manager's adapter: it persists each new view (compare-and-set on the epoch, fsync
off the loop) before installing and announcing it, drops replicas whose lease has expired
(the tick), and answers the replicas' lease requests. The decisions are the pure
`ViewManager`'s (`frontend/views.py`); this module only sequences them with the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from bazar.clock import monotonic_ms
from bazar.config import Limits
from bazar.frontend.views import ViewManager
from bazar.frontend.viewstore import ViewStore
from bazar.wire import LeaseRequest, View

log = logging.getLogger("bazar.frontend")


class ViewAdapter:
    def __init__(
        self,
        store: ViewStore,
        views: ViewManager,
        limits: Limits,
        primary_changed: Callable[[str], None],
    ) -> None:
        self.store = store
        self.views = views
        self.limits = limits
        self.primary_changed = primary_changed
        self._lock = asyncio.Lock()
        self._tick_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._tick_task = asyncio.create_task(self._tick_loop())

    async def stop(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task

    async def _tick_loop(self) -> None:
        """Drop replicas whose lease has expired, promote backups (frontend/views.py)."""
        while True:
            await asyncio.sleep(self.limits.view_tick_ms / 1000)
            try:
                async with self._lock:
                    for view in self.views.tick(monotonic_ms()).install:
                        await self.install(view)
            except Exception:
                log.exception("view tick failed")

    async def change(self, compute: Callable[[], View]) -> View:
        """A membership change: `compute` makes the new view from the current ones, and it
        is installed, under the lock the tick and the lease answers take, so that no other
        view of its tier comes between (each would be computed from the same epoch).

        Raises: what `compute` raises (the change no longer applies)."""
        async with self._lock:
            view = compute()
            await self.install(view)
            return view

    async def install(self, view: View) -> None:
        """Persist (compare-and-set, fsync off the loop), then install and announce. The
        caller holds the lock."""
        assert self._lock.locked()
        expected = self.views.views[view.tier].epoch
        stored = await asyncio.to_thread(self.store.compare_and_set, expected, view)
        if not stored:
            raise RuntimeError(f"the stored {view.tier} view moved past epoch {expected}")
        before = self.views.views[view.tier].primary
        self.views.install(view)
        if view.primary != before:
            self.primary_changed(view.tier)
        log.info(
            "transition=view tier=%s epoch=%d primary=%s backups=%s",
            view.tier,
            view.epoch,
            view.primary,
            ",".join(view.backups) or "-",
        )

    async def on_lease(self, lease: LeaseRequest) -> tuple[bool, dict[str, View]]:
        """A replica asks for a lease and learns the views (frontend/views.py, rule 2)."""
        async with self._lock:
            ready = self.views.on_lease(lease, monotonic_ms())
            for view in ready.install:
                await self.install(view)
            return ready.granted, dict(self.views.views)
