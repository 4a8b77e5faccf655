"""The failover scenario: kill -9 of a tier's primary during a purchase run, as writes saw it.

The primary and its pid come from the front end's `GET /cluster`; the kill is an action of the
load's parent (`load.run_load`), on the same monotonic clock as the workers' send times. From
the purchases recorded (send time, latency, status):
- the write gap: from the kill to the first 2xx answer of a purchase SENT after the kill (a
  purchase sent before and answered late is a stall, not a resumption);
- the failures after the kill (non-2xx or no answer), by status;
- a timeline per BUCKET_MS of answers, successes and failures, by when they arrived, relative
  to the kill (negative before it).

The same measure as `bench/failover.py`'s trials (`testing.harness.windows`), in one run of
`bazar bench` against a cluster that is already up; the fault tests assert the 2 s bound.
"""

from __future__ import annotations

import os
import signal
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bazar.bench.load import NO_ANSWER, Window
from bazar.bench.scenarios import BenchError
from bazar.client import EXIT_FAILED, EXIT_UNAVAILABLE

BUCKET_MS = 100
READY_DEADLINE_S = 60.0  # a replica restarted by `bazar up` after an earlier kill catches up
READY_POLL_S = 0.25
IN_SYNC_MIN = 2  # the primary and a backup to promote


@dataclass(frozen=True, slots=True)
class Target:
    tier: str
    name: str
    pid: int


@dataclass(frozen=True, slots=True)
class Bucket:
    """Answers that arrived in [start_ms, start_ms + BUCKET_MS) after the kill."""

    start_ms: int
    ok: int
    failed: int


@dataclass(frozen=True, slots=True)
class FailoverReport:
    tier: str
    killed: str
    killed_pid: int
    kill_after_s: float  # after the window opened
    write_gap_ms: float | None  # None: no purchase sent after the kill succeeded
    failed_after_kill: int
    statuses_after_kill: dict[str, int]  # non-2xx answers after the kill, and "no_answer"
    bucket_ms: int
    timeline: list[Bucket]


def primary_of(cluster: Mapping[str, Any], tier: str) -> Target | None:
    """The tier's primary from a `/cluster` body's data, if it has a pid and an in-sync
    backup to fail over to; else None (not ready)."""
    info = cluster.get(tier) or {}
    replicas = info.get("replicas") or []
    in_sync = [r for r in replicas if r.get("state") == "in_sync"]
    primary = next((r for r in in_sync if r.get("name") == info.get("primary")), None)
    if primary is None or not isinstance(primary.get("pid"), int) or len(in_sync) < IN_SYNC_MIN:
        return None
    return Target(tier, str(primary["name"]), int(primary["pid"]))


def wait_for_primary(cluster: Callable[[], Mapping[str, Any]], tier: str) -> Target:
    """Poll `/cluster` (through `cluster()`) until the tier can fail over.

    Raises: BenchError if it cannot within READY_DEADLINE_S.
    """
    deadline = time.monotonic() + READY_DEADLINE_S
    while (target := primary_of(cluster(), tier)) is None:
        if time.monotonic() > deadline:
            raise BenchError(
                f"failover: the {tier} tier has no primary with a pid and an in-sync backup "
                f"(after {READY_DEADLINE_S:.0f} s)",
                EXIT_UNAVAILABLE,
            )
        time.sleep(READY_POLL_S)
    return target


class Kill:
    """The action that kills the target, remembering when (monotonic ns)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.at_ns: int | None = None

    def __call__(self) -> None:
        """Raises: BenchError if the process is already gone."""
        self.at_ns = time.monotonic_ns()
        try:
            os.kill(self.target.pid, signal.SIGKILL)
        except ProcessLookupError as err:
            raise BenchError(f"failover: no process {self.target.pid}", EXIT_FAILED) from err


def write_gap_ns(
    sent_ns: array[int], latencies: array[int], codes: array[int], kill_ns: int
) -> int | None:
    """From the kill to the first 2xx answer of a request sent after it."""
    assert len(sent_ns) == len(latencies) == len(codes)
    answers = [
        sent + latency
        for sent, latency, code in zip(sent_ns, latencies, codes, strict=True)
        if sent >= kill_ns and 200 <= code < 300
    ]
    return min(answers) - kill_ns if answers else None


def timeline(
    sent_ns: array[int],
    latencies: array[int],
    codes: array[int],
    kill_ns: int,
    window: Window,
    bucket_ms: int = BUCKET_MS,
) -> list[Bucket]:
    """Successes and failures per bucket, by arrival, from the window's start to its end or
    the last arrival; buckets are aligned on the kill (bucket 0 starts at it), empty ones
    included."""
    assert len(sent_ns) == len(latencies) == len(codes)
    bucket_ns = bucket_ms * 1_000_000
    arrivals = [sent + latency for sent, latency in zip(sent_ns, latencies, strict=True)]
    first = (window.start_ns - kill_ns) // bucket_ns
    last = (max([window.end_ns - 1, *arrivals]) - kill_ns) // bucket_ns
    ok = [0] * (last - first + 1)
    failed = [0] * (last - first + 1)
    for arrival, code in zip(arrivals, codes, strict=True):
        index = (arrival - kill_ns) // bucket_ns - first
        assert 0 <= index <= last - first, "a request measured before the window opened"
        if 200 <= code < 300:
            ok[index] += 1
        else:
            failed[index] += 1
    return [Bucket((first + i) * bucket_ms, ok[i], failed[i]) for i in range(last - first + 1)]


def report(
    kill: Kill,
    kill_after_s: float,
    window: Window,
    sent_ns: array[int],
    latencies: array[int],
    codes: array[int],
) -> FailoverReport:
    """What the purchases of the run saw of the kill."""
    assert kill.at_ns is not None, "the kill did not happen"
    statuses: dict[str, int] = {}
    for sent, latency, code in zip(sent_ns, latencies, codes, strict=True):
        if sent + latency >= kill.at_ns and not 200 <= code < 300:
            name = "no_answer" if code == NO_ANSWER else str(code)
            statuses[name] = statuses.get(name, 0) + 1
    gap = write_gap_ns(sent_ns, latencies, codes, kill.at_ns)
    return FailoverReport(
        tier=kill.target.tier,
        killed=kill.target.name,
        killed_pid=kill.target.pid,
        kill_after_s=kill_after_s,
        write_gap_ms=None if gap is None else gap / 1e6,
        failed_after_kill=sum(statuses.values()),
        statuses_after_kill=dict(sorted(statuses.items())),
        bucket_ms=BUCKET_MS,
        timeline=timeline(sent_ns, latencies, codes, kill.at_ns, window),
    )
