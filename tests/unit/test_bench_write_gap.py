"""The failover scenario's arithmetic (`bazar.bench.write_gap`): gap, failures, timeline."""

from __future__ import annotations

from array import array

import pytest

from bazar.bench import write_gap
from bazar.bench.load import Window

MS = 1_000_000
KILL = 10_000 * MS  # the kill, on the monotonic clock


def requests(*rows: tuple[int, int, int]) -> tuple[array[int], array[int], array[int]]:
    """(sent ms after the kill, latency ms, status) -> the three aligned arrays, in ns."""
    sent = array("q", [KILL + ms * MS for ms, _, _ in rows])
    latencies = array("q", [ms * MS for _, ms, _ in rows])
    codes = array("h", [status for _, _, status in rows])
    return sent, latencies, codes


def test_write_gap_counts_only_purchases_sent_after_the_kill() -> None:
    sent, latencies, codes = requests(
        (-50, 400, 200),  # sent before, answered late: a stall, not a resumption
        (10, 5, 503),
        (20, 700, 200),  # sent after, answered at +720
        (300, 600, 200),  # answered at +900
    )
    assert write_gap.write_gap_ns(sent, latencies, codes, KILL) == 720 * MS


def test_no_success_after_the_kill_is_no_gap() -> None:
    sent, latencies, codes = requests((-10, 5, 200), (10, 5, 503), (20, 1, 0))
    assert write_gap.write_gap_ns(sent, latencies, codes, KILL) is None


def test_timeline_buckets_arrivals_around_the_kill() -> None:
    window = Window(KILL - 250 * MS, KILL + 300 * MS)
    sent, latencies, codes = requests(
        (-240, 1, 200),  # arrives at -239: bucket -300
        (-20, 30, 503),  # arrives at +10: bucket 0, a failure
        (50, 1, 0),  # no answer at +51: bucket 0
        (150, 1, 200),  # +151: bucket 100
        (290, 120, 200),  # +410: after the window closed, a bucket of its own
    )
    buckets = write_gap.timeline(sent, latencies, codes, KILL, window)
    assert [(b.start_ms, b.ok, b.failed) for b in buckets] == [
        (-300, 1, 0),
        (-200, 0, 0),
        (-100, 0, 0),
        (0, 0, 2),
        (100, 1, 0),
        (200, 0, 0),
        (300, 0, 0),
        (400, 1, 0),
    ]


def test_report_counts_failures_after_the_kill_by_status() -> None:
    window = Window(KILL - 100 * MS, KILL + 1000 * MS)
    sent, latencies, codes = requests(
        (-90, 5, 409), (-5, 10, 503), (1, 2, 503), (3, 4, 0), (10, 100, 200)
    )
    kill = write_gap.Kill(write_gap.Target("catalog", "catalog-1", 4242))
    kill.at_ns = KILL
    report = write_gap.report(kill, 0.1, window, sent, latencies, codes)
    assert report.statuses_after_kill == {"503": 2, "no_answer": 1}
    assert report.failed_after_kill == 3
    assert report.write_gap_ms == pytest.approx(110.0)
    assert (report.killed, report.killed_pid, report.bucket_ms) == ("catalog-1", 4242, 100)
    assert sum(b.ok + b.failed for b in report.timeline) == 5


def replica(name: str, role: str, state: str = "in_sync", pid: object = 1) -> dict[str, object]:
    return {"name": name, "role": role, "state": state, "pid": pid}


def test_the_primary_is_a_target_only_with_an_in_sync_backup_and_a_pid() -> None:
    both = [replica("catalog-1", "primary", pid=11), replica("catalog-2", "backup", pid=12)]
    cluster = {"catalog": {"primary": "catalog-1", "replicas": both}}
    assert write_gap.primary_of(cluster, "catalog") == write_gap.Target("catalog", "catalog-1", 11)
    assert write_gap.primary_of(cluster, "order") is None
    alone = [both[0], replica("catalog-2", "backup", state="down")]
    assert (
        write_gap.primary_of({"catalog": {"primary": "catalog-1", "replicas": alone}}, "catalog")
        is None
    )
    no_pid = [replica("catalog-1", "primary", pid=None), both[1]]
    assert (
        write_gap.primary_of({"catalog": {"primary": "catalog-1", "replicas": no_pid}}, "catalog")
        is None
    )
