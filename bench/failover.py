"""What a failover costs writes, how long a restarted replica takes to catch up, and what each
replica adds to a purchase.

Three measurements on real clusters (`bazar.testing.cluster`, `bazar up --no-restart`):
1. Failover: kill -9 of the catalog primary, catalog backup, order primary or order backup,
   each TRIALS times (interleaved, so that load from other processes spreads over the roles),
   a fresh cluster per trial, under BUYERS buyers that retry their idempotency key after a 503
   or no answer (`testing.clients`: the buyers of the failover tests, without their readers).
   Per trial, on the buyers' clock (`testing.harness.windows`): the write gap (the kill to
   the first acknowledgement of a purchase sent after it), the 503 window (the kill to the
   arrival of the last answer other than 200), the count of 503s, and the stall (the kill to
   the last answer to a purchase sent before it: a wait without a 503).
2. Catch-up: kill -9 of the catalog backup, buying on once it is listed down until the
   primary's `last_seq` is BEHIND_ENTRIES above its last listed one, then the same replica
   started by hand (`bazar serve catalog --config ... --name ...`) while the buyers go on: the
   time from its start to `/cluster` listing it `in_sync`, and how many entries it was behind
   (the primary's `last_seq` at its start minus its own last listed one).
3. Replica counts: `bazar bench`'s purchase scenario (its library, `bazar.bench`) at 1 and 32
   clients against clusters of 1, 2 and 3 replicas per tier, one after the other.

Nothing is asserted: the fault tests do that. The load average is recorded before every
measurement, because the 2 cores may be shared with other work (test runs) at the same time.

Run: .venv/bin/python bench/failover.py --output /tmp/bazar-failover.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from bazar.bench.command import run_plan
from bazar.bench.report import RunResult, header
from bazar.bench.scenarios import plan as bench_plan
from bazar.testing.clients import (
    BUYERS,
    READERS,
    Ledger,
    Load,
    hold_load_until,
    wait_for_acks,
)
from bazar.testing.cluster import Cluster, running, served_by_hand, wait_until
from bazar.testing.harness import (
    STOCKS,
    TOPIC,
    Nemesis,
    all_in_sync,
    failover_cluster,
    replica_in_role,
    wait_dropped,
    wait_writes_resume,
    windows,
)

ROLES = (("catalog", "primary"), ("catalog", "backup"), ("order", "primary"), ("order", "backup"))
TRIALS = 5
CATCH_UP_TRIALS = 3
ACKS_BEFORE_KILL = 100  # the load is running at its pace before the fault
HOLD_AFTER_KILL_S = 4.0  # twice the 2 s that the fault tests allow for the 503 window
BEHIND_ENTRIES = 500  # buying with the backup down until the primary is this far ahead
BEHIND_DEADLINE_S = 60.0
CATCH_UP_DEADLINE_S = 60.0
SERVE_STOP_S = 10.0
REPLICA_COUNTS = (1, 2, 3)
CONCURRENCY = (1, 32)
BENCH_DURATION_S = 10.0
START_DEADLINE_S = 20.0
PARTS = ("failover", "catch-up", "replicas")
LoadAverage = tuple[float, float, float]


# ---------------------------------------------------------------- the load


@contextlib.contextmanager
def buying(cluster: Cluster, ledger: Ledger) -> Iterator[Load]:
    """The failover tests' buyers alone (`Load` starts its BUYERS buyer threads first, its
    readers after them): a purchase load, as `clients.running_load` runs it otherwise."""
    load = Load(cluster, ledger, tuple(STOCKS), TOPIC)
    assert len(load.threads) == BUYERS + READERS
    buyers = load.threads[:BUYERS]
    for thread in buyers:
        thread.start()
    try:
        yield load
    finally:
        load.stopped.set()
        for thread in buyers:
            thread.join()


# ---------------------------------------------------------------- 1: failover


@dataclass(frozen=True, slots=True)
class FailoverTrial:
    """One kill; times in seconds after it, None when there was nothing to measure."""

    tier: str
    role: str
    trial: int
    killed: str
    load_average: LoadAverage
    write_gap_s: float | None
    window_503_s: float | None
    count_503: int
    other_non_200: dict[str, int]  # answers other than 200 and 503 after the kill, by status
    stall_s: float | None
    acks_before: int
    acks_after: int
    non_200_before: int


def failover_trial(directory: Path, tier: str, role: str, trial: int) -> FailoverTrial:
    """A fresh cluster, the buyers, kill -9 of the replica in `role`, HOLD_AFTER_KILL_S more
    of buying (past the first acknowledgement when writes take longer to resume)."""
    ledger = Ledger()
    with failover_cluster(directory, ledger) as cluster:
        nemesis = Nemesis(cluster)
        name = replica_in_role(cluster, tier, role)
        load_average = os.getloadavg()
        with buying(cluster, ledger):
            wait_for_acks(ledger, ACKS_BEFORE_KILL, 0.0, "before the kill")
            kill = nemesis.kill(name)
            with contextlib.suppress(AssertionError):  # then the gap is None: a finding
                wait_writes_resume(ledger, kill)
            hold_load_until(kill.at_s + HOLD_AFTER_KILL_S, "the load after the kill")
    before, after = windows(ledger, [kill])
    attempts = ledger.attempts()
    answers = Counter(a.status for a in attempts if a.status != 200 and a.complete_s >= kill.at_s)
    sent_before = [a.complete_s - kill.at_s for a in attempts if a.invoke_s < kill.at_s]
    count_503 = answers.pop(503, 0)
    return FailoverTrial(
        tier=tier,
        role=role,
        trial=trial,
        killed=name,
        load_average=load_average,
        write_gap_s=after.first_ack_s,
        window_503_s=max(after.unavailable_s) if after.unavailable_s else None,
        count_503=count_503,
        other_non_200={str(status): count for status, count in sorted(answers.items())},
        stall_s=max(sent_before) if sent_before else None,
        acks_before=sum(1 for a in attempts if a.status == 200 and a.invoke_s < kill.at_s),
        acks_after=ledger.acks_invoked_after(kill.at_s),
        non_200_before=len(before.unavailable_s),
    )


def failover_trials(root: Path, trials: int) -> list[FailoverTrial]:
    found = []
    for trial in range(trials):
        for tier, role in ROLES:
            result = failover_trial(root / f"failover-{tier}-{role}-{trial}", tier, role, trial)
            print(f"  kill -9 {tier} {role} #{trial}: {brief(result)}", flush=True)
            found.append(result)
    return found


def brief(result: FailoverTrial) -> str:
    return (
        f"gap {seconds(result.write_gap_s)}, 503 window {seconds(result.window_503_s)}, "
        f"{result.count_503} 503s, stall {seconds(result.stall_s)}, "
        f"load {result.load_average[0]:.2f}"
    )


# ---------------------------------------------------------------- 2: catch-up


@dataclass(frozen=True, slots=True)
class CatchUpTrial:
    """One restart of a dead catalog backup by hand; times in seconds after its start."""

    trial: int
    name: str
    load_average: LoadAverage
    down_s: float  # from the kill to the restart
    replica_last_seq: int  # its last listed position, reported before it died
    primary_last_seq_at_start: int
    behind: int
    listed_s: float  # first listed with its new pid (catching_up or in_sync)
    in_sync_s: float
    primary_last_seq_at_in_sync: int
    path: str  # "log" (entries) or "snapshot" (the primary had pruned what it needed)


def catch_up_trial(directory: Path, trial: int, log_entries_max: int | None) -> CatchUpTrial:
    ledger = Ledger()
    bounded = failover_cluster(directory, ledger, log_entries_max=log_entries_max)
    with bounded as cluster, buying(cluster, ledger):
        nemesis = Nemesis(cluster)
        name = replica_in_role(cluster, "catalog", "backup")
        epoch = cluster.cluster_info()["catalog"]["epoch"]
        wait_for_acks(ledger, ACKS_BEFORE_KILL, 0.0, "before the kill")
        kill = nemesis.kill(name)
        wait_dropped(cluster, name, epoch, primary=False)
        wait_until(
            lambda: behind(cluster, name) >= BEHIND_ENTRIES,
            BEHIND_DEADLINE_S,
            f"the catalog primary {BEHIND_ENTRIES} entries ahead of {name}",
        )
        info = cluster.cluster_info()["catalog"]
        positions = {r["name"]: int(r["last_seq"]) for r in info["replicas"]}
        load_average = os.getloadavg()
        started_s = time.monotonic()
        with served_by_hand(cluster, name) as process:
            listed_s, in_sync_s, primary_seq = watch_rejoin(cluster, name, process.pid)
        replica_log = (cluster.data_dir / "logs" / f"{name}.log").read_text()
        return CatchUpTrial(
            trial=trial,
            name=name,
            load_average=load_average,
            down_s=started_s - kill.at_s,
            replica_last_seq=positions[name],
            primary_last_seq_at_start=positions[info["primary"]],
            behind=positions[info["primary"]] - positions[name],
            listed_s=listed_s - started_s,
            in_sync_s=in_sync_s - started_s,
            primary_last_seq_at_in_sync=primary_seq,
            path="snapshot" if "transition=snapshot " in replica_log else "log",
        )


def behind(cluster: Cluster, name: str) -> int:
    """How far the catalog primary's `last_seq` is above the one `name` last reported."""
    info = cluster.cluster_info()["catalog"]
    positions = {r["name"]: int(r["last_seq"]) for r in info["replicas"]}
    return positions[info["primary"]] - positions[name]


def watch_rejoin(cluster: Cluster, name: str, pid: int) -> tuple[float, float, int]:
    """Poll `/cluster` until `name` is listed in sync with `pid`; returns when it was first
    listed with that pid, when in sync, and the primary's `last_seq` then."""
    seen: dict[str, float | int] = {}

    def in_sync() -> bool:
        info = cluster.cluster_info()["catalog"]
        now_s = time.monotonic()
        entry = next(r for r in info["replicas"] if r["name"] == name)
        if entry["pid"] != pid or entry["state"] == "down":
            return False
        seen.setdefault("listed_s", now_s)
        if entry["state"] != "in_sync":
            return False
        primary = next(r for r in info["replicas"] if r["name"] == info["primary"])
        seen.update(in_sync_s=now_s, primary_last_seq=int(primary["last_seq"]))
        return True

    wait_until(in_sync, CATCH_UP_DEADLINE_S, f"{name} in sync again with pid {pid}")
    return float(seen["listed_s"]), float(seen["in_sync_s"]), int(seen["primary_last_seq"])


# ---------------------------------------------------------------- 3: replica counts


@dataclass(frozen=True, slots=True)
class ReplicaPoint:
    replicas: int
    load_average: LoadAverage
    result: RunResult


def replica_points(root: Path, duration_s: float) -> list[ReplicaPoint]:
    """`bazar bench --scenario purchase` at each of CONCURRENCY against a cluster of N
    replicas per tier, for each N of REPLICA_COUNTS."""
    console = Console(stderr=True, highlight=False)
    found = []
    for count in REPLICA_COUNTS:
        options: dict[str, Any] = {"catalog_replicas": count, "order_replicas": count}
        with running(root / f"replicas-{count}", **options) as cluster:
            wait_until(lambda: all_in_sync(cluster), START_DEADLINE_S, "every replica in sync")
            specs = bench_plan(
                cluster.url,
                scenarios=["purchase"],
                concurrency=CONCURRENCY,
                duration_s=duration_s,
                admin_token=cluster.admin_token,
            )
            for spec in specs:
                load_average = os.getloadavg()
                (result,) = run_plan([spec], admin_token=cluster.admin_token, console=console)
                found.append(ReplicaPoint(count, load_average, result))
    return found


# ---------------------------------------------------------------- report


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def spread(values: Sequence[float | None]) -> str:
    """min / median / max of the values measured, and how many trials had none."""
    measured = [value for value in values if value is not None]
    if not measured:
        return "none"
    text = f"{min(measured):.3f} / {statistics.median(measured):.3f} / {max(measured):.3f}"
    missing = len(values) - len(measured)
    return text + (f" ({missing} none)" if missing else "")


def failover_table(trials: Sequence[FailoverTrial]) -> str:
    rows = [
        "| kill -9 of | trials | write gap s | 503 window s | 503s | stall s | other non-200 "
        "| load avg (1 min) |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for tier, role in ROLES:
        mine = [t for t in trials if (t.tier, t.role) == (tier, role)]
        if not mine:
            continue
        counts = [float(t.count_503) for t in mine]
        others: Counter[str] = Counter()
        for t in mine:
            others.update(t.other_non_200)
        loads = [t.load_average[0] for t in mine]
        rows.append(
            f"| {tier} {role} | {len(mine)} | {spread([t.write_gap_s for t in mine])} "
            f"| {spread([t.window_503_s for t in mine])} "
            f"| {min(counts):.0f} / {statistics.median(counts):.0f} / {max(counts):.0f} "
            f"| {spread([t.stall_s for t in mine])} | {dict(others) or '-'} "
            f"| {min(loads):.2f}-{max(loads):.2f} |"
        )
    return "\n".join(rows)


def catch_up_table(trials: Sequence[CatchUpTrial]) -> str:
    rows = [
        "| trial | from | down s | behind (entries) | listed s | in_sync s "
        "| in_sync - listed s | primary last_seq: start -> in_sync | load avg (1 min) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in trials:
        rows.append(
            f"| {t.trial} | {t.path} | {t.down_s:.2f} | {t.behind} | {t.listed_s:.3f} "
            f"| {t.in_sync_s:.3f} "
            f"| {t.in_sync_s - t.listed_s:.3f} "
            f"| {t.primary_last_seq_at_start} -> {t.primary_last_seq_at_in_sync} "
            f"| {t.load_average[0]:.2f} |"
        )
    return "\n".join(rows)


def replicas_table(points: Sequence[ReplicaPoint]) -> str:
    rows = [
        "| replicas per tier | clients | purchases | req/s | p50 ms | p90 ms | p99 ms "
        "| non-2xx | load avg (1 min) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for point in points:
        r = point.result
        rows.append(
            f"| {point.replicas} | {r.concurrency} | {r.requests:,} | {r.throughput_rps:,.0f} "
            f"| {milliseconds(r.p50_ms)} | {milliseconds(r.p90_ms)} | {milliseconds(r.p99_ms)} "
            f"| {r.non_2xx} | {point.load_average[0]:.2f} |"
        )
    return "\n".join(rows)


def milliseconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# ---------------------------------------------------------------- main


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=TRIALS, help="kills per role")
    parser.add_argument("--catch-up-trials", type=int, default=CATCH_UP_TRIALS)
    parser.add_argument(
        "--log-entries-max",
        type=int,
        default=None,
        help="bound the replicas' log in the catch-up part (small: catch-up by snapshot)",
    )
    parser.add_argument("--duration", type=float, default=BENCH_DURATION_S, help="s per point")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--output", type=Path, default=Path("failover.json"), help="raw JSON")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    command = shlex.join([".venv/bin/python", "bench/failover.py", *sys.argv[1:]])
    report: dict[str, Any] = {"header": header(command)}
    for key, value in report["header"].items():
        print(f"# {key}: {value}")
    started_s = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bazar-failover-") as directory:
        root = Path(directory)
        if "failover" in args.parts:
            print(f"\n## kill -9 under {BUYERS} buyers, {args.trials} trials per role", flush=True)
            failovers = failover_trials(root, args.trials)
            report["failover"] = [dataclasses.asdict(t) for t in failovers]
            print(failover_table(failovers), flush=True)
        if "catch-up" in args.parts:
            print(
                f"\n## catch-up of the catalog backup, {BEHIND_ENTRIES}+ entries behind", flush=True
            )
            catch_ups = [
                catch_up_trial(root / f"catch-up-{n}", n, args.log_entries_max)
                for n in range(args.catch_up_trials)
            ]
            report["catch_up"] = [dataclasses.asdict(t) for t in catch_ups]
            print(catch_up_table(catch_ups), flush=True)
        if "replicas" in args.parts:
            print(f"\n## purchase, {args.duration} s per point", flush=True)
            points = replica_points(root, args.duration)
            report["replicas"] = [dataclasses.asdict(p) for p in points]
            print(replicas_table(points), flush=True)
    report["elapsed_s"] = time.monotonic() - started_s
    print(f"\n# elapsed {report['elapsed_s']:.0f} s; load average now {os.getloadavg()}")
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"# raw results: {args.output}")


if __name__ == "__main__":
    main()
