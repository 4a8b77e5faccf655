"""Read balancing: a read goes to the tier's in-sync replicas in round-robin order, moves on
when one fails, and rounds again until a deadline; a replica that did not answer is tried
last for one read timeout."""

from __future__ import annotations

import asyncio
import logging
from typing import TypeVar

from bazar import logs
from bazar.clock import monotonic_ms
from bazar.config import Limits
from bazar.errors import BazarError, InvalidRequest, NotFound, Unavailable
from bazar.frontend.balancer import RoundRobin
from bazar.frontend.metrics import FrontendMetrics
from bazar.frontend.views import ViewManager
from bazar.transport import Transport, TransportError

T = TypeVar("T")
log = logging.getLogger("bazar.frontend")


class Reads:
    def __init__(
        self, views: ViewManager, transport: Transport, limits: Limits, metrics: FrontendMetrics
    ) -> None:
        self.views = views
        self.transport = transport
        self.limits = limits
        self.metrics = metrics
        self.balancer = RoundRobin()
        self._failed_until_ms: dict[str, int] = {}

    async def read(self, tier: str, path: str, reply_type: type[T]) -> T:
        """One read, from the replicas in round-robin order, moving on when one fails, and
        round again until `read_deadline_ms` (a failover under way ends within it): a dead
        or paused replica costs a read time, never a failure. A replica that fails to
        answer is tried last for one read timeout.

        Raises: NotFound, InvalidRequest (the replica's definite answers), Unavailable.
        """
        deadline_ms = monotonic_ms() + self.limits.read_deadline_ms
        while True:
            reply = await self._read_round(tier, path, reply_type)
            if reply is not None:
                return reply
            if monotonic_ms() >= deadline_ms:
                raise Unavailable(f"no {tier} replica could answer")
            await asyncio.sleep(self.limits.replicate_retry_ms / 1000)

    async def _read_round(self, tier: str, path: str, reply_type: type[T]) -> T | None:
        now = monotonic_ms()
        view = self.views.views[tier]
        members = [view.primary, *view.backups]
        in_sync = self.views.in_sync(tier, now)
        healthy = [n for n in in_sync if self._failed_until_ms.get(n, 0) <= now]
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
                logs.note("replica", name)
                return reply
            except (NotFound, InvalidRequest):
                self.metrics.backend_reads.labels(tier, "ok").inc()
                logs.note("replica", name)
                raise
            except (TransportError, BazarError) as error:
                self.metrics.backend_reads.labels(tier, "failed").inc()
                if isinstance(error, TransportError):  # unreachable: try it last for a while
                    if self._failed_until_ms.get(name, 0) <= now:
                        log.warning("transition=replica_skipped node=%s error=%s", name, error)
                    self._failed_until_ms[name] = monotonic_ms() + self.limits.read_timeout_ms
        return None
