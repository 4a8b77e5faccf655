"""The front end's metrics: what every process has (`bazar/metrics.py`), the reads it sends
to replicas, and collectors that read the cache's counters and the view manager's views at
scrape time (nothing to update on the hot path).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import get_args

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bazar.frontend.cache import Cache
from bazar.frontend.views import State, ViewManager
from bazar.metrics import Metrics

STATES: tuple[State, ...] = get_args(State)


class FrontendMetrics(Metrics):
    def __init__(self, cache: Cache, views: ViewManager, clock_ms: Callable[[], int]) -> None:
        super().__init__()
        self.backend_reads = Counter(
            "bazar_backend_reads",
            "Reads the front end sent to replicas (each attempt).",
            ["tier", "outcome"],
            registry=self.registry,
        )
        self.register(CacheCollector(cache))
        self.register(ViewCollector(views, clock_ms))


class CacheCollector(Collector):
    """Reads the cache's counters at scrape time: nothing to update on the hot path."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        cache = self.cache
        yield GaugeMetricFamily(
            "bazar_cache_entries", "Cached responses.", value=len(cache.entries)
        )
        for name, value, text in (
            ("hits", cache.hits, "Reads answered from the cache."),
            ("misses", cache.misses, "Reads that went to a replica."),
            ("invalidations", cache.invalidations, "Invalidations received."),
            ("rejected_fills", cache.rejected_fills, "Late fills refused by the version rule."),
            ("evictions", cache.evictions, "Entries evicted by the size bound."),
            ("expirations", cache.expirations, "Entries expired by the TTL."),
        ):
            yield CounterMetricFamily(f"bazar_cache_{name}", text, value=value)


class ViewCollector(Collector):
    """Each tier's current view as the view manager holds it: epoch, primary, and every
    member's state (`in_sync`, `catching_up`, `down`, as `GET /cluster` shows them)."""

    def __init__(self, views: ViewManager, clock_ms: Callable[[], int]) -> None:
        self.views = views
        self.clock_ms = clock_ms

    def collect(self) -> Iterator[Metric]:
        now_ms = self.clock_ms()
        epoch = GaugeMetricFamily(
            "bazar_view_epoch", "The epoch of the tier's current view.", labels=["tier"]
        )
        primary = GaugeMetricFamily(
            "bazar_view_primary",
            "1 for the primary of the tier's current view.",
            labels=["tier", "node"],
        )
        state = GaugeMetricFamily(
            "bazar_view_replica_state",
            "1 for each member's current state (in_sync, catching_up, down), else 0.",
            labels=["tier", "node", "state"],
        )
        for tier, view in sorted(self.views.views.items()):
            epoch.add_metric([tier], view.epoch)
            primary.add_metric([tier, view.primary], 1)
            for member in view.members:
                current = self.views.state(tier, member.name, now_ms)
                for name in STATES:
                    state.add_metric([tier, member.name, name], 1 if name == current else 0)
        yield epoch
        yield primary
        yield state
