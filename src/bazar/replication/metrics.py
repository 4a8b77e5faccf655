"""A replica's metrics, the same for both tiers: what every process has (`bazar/metrics.py`),
its position and role read from the core at scrape time, and what its writer does.

Rules: state the core already holds (epoch, role, commit_seq, last_seq, each peer's
match_seq, the lease) is read by `ReplicaCollector` when Prometheus scrapes, so the write
path pays nothing for it. What exists nowhere else (batch sizes, the time of a durable
transaction) is observed once per batch, never once per command.

Every replica family carries `tier` and `node` labels (the request counters, the same in
every process, do not): a replica keeps its name when it moves to another address, so
dashboards can follow it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar, get_args

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bazar.config import Limits
from bazar.metrics import Metrics
from bazar.replication.replica import Replica
from bazar.wire import Role

T = TypeVar("T")
ROLES: tuple[Role, ...] = get_args(Role)
FSYNC_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
IDENTITY = ["tier", "node"]


def powers_of_two(upper: int) -> tuple[float, ...]:
    """Histogram buckets 1, 2, 4, ... up to `upper` (a configured bound) included."""
    assert upper >= 1
    buckets = [1 << shift for shift in range(upper.bit_length()) if 1 << shift < upper]
    return (*map(float, buckets), float(upper))


class ReplicaMetrics(Metrics):
    def __init__(self, limits: Limits, tier: str, node: str) -> None:
        super().__init__()
        identity = (tier, node)  # bound once: an observation does no label lookup
        self.batch_commands = Histogram(
            "bazar_batch_commands",
            "Commands per replicated batch (one log entry), on the primary: the group commit.",
            IDENTITY,
            buckets=powers_of_two(limits.batch_commands_max),
            registry=self.registry,
        ).labels(*identity)
        self.stage_entries = Histogram(
            "bazar_stage_entries",
            "Entries a backup staged from one Append (more than one while catching up).",
            IDENTITY,
            buckets=powers_of_two(limits.catch_up_entries_max),
            registry=self.registry,
        ).labels(*identity)
        fsync = Histogram(
            "bazar_fsync_seconds",
            "Time of a SQLite transaction on the writer thread: the primary's intent of a"
            " batch (kind=intent, with its fsync, while the backups stage), the primary's"
            " COMMIT of a batch (kind=commit, an fsync only when the intent does not cover it"
            " or every 64 batches), a backup's stage transaction (kind=stage, with fsync).",
            [*IDENTITY, "kind"],
            buckets=FSYNC_BUCKETS_S,
            registry=self.registry,
        )
        self.fsync_seconds = {
            kind: fsync.labels(*identity, kind) for kind in ("commit", "stage", "intent")
        }

    def observe_fsync(self, kind: str, seconds: float) -> None:
        """`storage.Store.timing`: on the writer thread, after the transaction."""
        self.fsync_seconds[kind].observe(seconds)

    def watch(self, core: Replica, queued: Callable[[], int], clock_ms: Callable[[], int]) -> None:
        self.register(ReplicaCollector(core, queued, clock_ms))


class ReplicaCollector(Collector):
    """The core's state at scrape time (the event loop's thread, like every core step)."""

    def __init__(
        self, core: Replica, queued: Callable[[], int], clock_ms: Callable[[], int]
    ) -> None:
        self.core = core
        self.queued = queued
        self.clock_ms = clock_ms

    def collect(self) -> Iterator[Metric]:
        core = self.core
        identity = [core.tier, core.name]
        now_ms = self.clock_ms()
        for name, text, value in (
            ("epoch", "The highest view epoch this replica has seen.", core.epoch),
            ("commit_seq", "The last log entry known committed here.", core.commit_seq),
            ("last_seq", "The last log entry held here (staged included).", core.last_seq),
            ("staged_entries", "Entries staged, not yet known committed.", len(core.staged)),
            ("queued_commands", "Writes waiting for the next batch.", self.queued()),
            ("serving", "1 while it may serve reads (role, lease).", int(core.serving(now_ms))),
            (
                "lease_remaining_seconds",
                "Time left on the lease the front end granted.",
                max(0, core.lease_until_ms - now_ms) / 1000,
            ),
        ):
            gauge = GaugeMetricFamily(f"bazar_replica_{name}", text, labels=IDENTITY)
            gauge.add_metric(identity, value)
            yield gauge
        for name, text, value in (
            ("lease_requests", "Lease requests sent to the front end.", core.lease_seq),
            ("truncations", "Staged suffixes dropped for a newer primary's.", core.truncations),
        ):
            counter = CounterMetricFamily(f"bazar_replica_{name}", text, labels=IDENTITY)
            counter.add_metric(identity, value)
            yield counter
        yield self.collect_role(identity)
        yield self.collect_lag(identity)

    def collect_role(self, identity: list[str]) -> Metric:
        role = GaugeMetricFamily(
            "bazar_replica_role",
            "1 for the role this replica plays in its current view, else 0.",
            labels=[*IDENTITY, "role"],
        )
        current = self.core.role
        for name in ROLES:
            role.add_metric([*identity, name], 1 if name == current else 0)
        return role

    def collect_lag(self, identity: list[str]) -> Metric:
        """On the primary only (it alone tracks peers): per peer, the committed entries the
        peer has not acknowledged, `commit_seq - match_seq` (0 when it holds them all; a
        backup acknowledging the batch in flight is ahead of `commit_seq`)."""
        lag = GaugeMetricFamily(
            "bazar_replication_lag_entries",
            "Committed entries a peer has not acknowledged, as the primary sees it.",
            labels=[*IDENTITY, "peer"],
        )
        core = self.core
        if core.role == "primary":
            for peer_name, peer in sorted(core.peers.items()):
                lag.add_metric([*identity, peer_name], max(0, core.commit_seq - peer.match_seq))
        return lag
