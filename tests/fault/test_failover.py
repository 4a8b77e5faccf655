"""Failover: a dead or paused replica costs writes at most 2 s and reads nothing, and nobody
waits for it to come back (docs/contract.md §3.5, §8 "Faults" and "Faults and membership").

Goal: each test fails if, after kill -9 or SIGSTOP of one replica of a cluster started with
`--no-restart`, writes do not resume without that replica within 2 s (a purchase sent after
the fault acknowledged, and every 503 or missing answer arrived, within 2 s of it), a read
fails, `/cluster` does not list the replica down in a newer epoch (another replica primary
when it was the primary), or, once the load stops, an acknowledged purchase is lost, a key is
sold twice, orders differ from sales, the stock is not linearizable, or the live replicas of a
tier differ.

Method (`bazar.testing.harness`, `bazar.testing.clients`): a real cluster seeded with 3 books
of ample stock. 8 client threads buy, each purchase under an Idempotency-Key retried with the
SAME key after a 503 or no answer until definite; 4 threads read through the front end
(`/info/{id}`, `/search/{topic}`, `/orders` pages); both are recorded in a Jepsen-shaped history
(a `buy` per key, a read per book read). The nemesis acts on a pid from `/cluster` and records
the time of each fault on the clients' clock. Every wait is `wait_until` on an observable
condition with a deadline; the only latency asserted is the contract's 2 s after each fault (a
replica's return counts as an event too: its rejoining is a view change). After the load, the
keys left indefinite are retried until definite; at quiescence the live replicas are compared
with what the clients were told, and the history is judged by the linearizability checker.
Without failover every test fails at "writes resumed": a dead or paused replica blocks its
tier's writes until it is back.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pytest

from bazar.testing.clients import Ledger, hold_load_until, wait_for_acks
from bazar.testing.cluster import Cluster, served_by_hand
from bazar.testing.harness import (
    VIEW_DEADLINE_S,
    WRITE_WINDOW_S,
    Nemesis,
    backups_in_sync,
    check_after_load,
    check_load,
    check_reads,
    expect,
    failover_cluster,
    failover_load,
    listed,
    replica,
    replica_in_role,
    wait_dropped,
    wait_writes_resume,
)

ACKS_BEFORE_FAULT = 100
ACKS_AFTER_RESUME = 100
LOAD_AFTER_FAULT_S = 3 * WRITE_WINDOW_S  # answers observed well past each window
PAUSE_S = 3.0  # longer than the 1 s lease: the paused primary must be deposed
REJOIN_DEADLINE_S = 10.0


# ---------------------------------------------------------------- 1: kill -9, each role


@pytest.mark.parametrize(
    ("tier", "role"),
    [("catalog", "backup"), ("catalog", "primary"), ("order", "backup"), ("order", "primary")],
)
def test_kill_9_of_one_replica_costs_writes_at_most_2_s_and_no_read(
    tmp_path: Path, tier: str, role: str
) -> None:
    """kill -9 of the catalog or order backup or primary under load, never restarted: writes
    resume without it (a backup is dropped, or promoted in its place), every 503 arrives within
    2 s of the kill, no read fails, `/cluster` lists it down in a newer epoch (with another
    primary), and nothing acknowledged is lost or sold twice."""
    ledger = Ledger()
    with failover_cluster(tmp_path, ledger) as cluster:
        nemesis = Nemesis(cluster)
        name = replica_in_role(cluster, tier, role)
        epoch = cluster.cluster_info()[tier]["epoch"]
        with failover_load(cluster, ledger):
            wait_for_acks(ledger, ACKS_BEFORE_FAULT, 0.0, "before the fault")
            kill = nemesis.kill(name)
            resumed_s = wait_writes_resume(ledger, kill)
            view = wait_dropped(cluster, name, epoch, primary=role == "primary")
            hold_load_until(kill.at_s + LOAD_AFTER_FAULT_S, "the load after the kill")
            wait_for_acks(ledger, ACKS_AFTER_RESUME, kill.at_s, "since the kill")
        print(f"{kill.what}: first acknowledgement +{resumed_s:.3f} s; view {view}")
        check_load(ledger, nemesis.events)
        print(check_after_load(cluster, ledger))


# ---------------------------------------------------------------- 2: SIGSTOP of a primary


@pytest.mark.parametrize("tier", ["catalog", "order"])
def test_paused_primary_is_deposed_and_returns_as_a_backup(tmp_path: Path, tier: str) -> None:
    """SIGSTOP of the catalog or order primary for 3 s (its 1 s lease runs out) under load,
    then SIGCONT: during the pause writes resume on a promoted backup, and `/cluster` lists
    the paused primary down in a newer epoch; after it the old primary comes back as an
    in-sync backup, the new primary stays primary and keeps serving; every 503 arrives within
    2 s of the pause (or of the return), no read fails, nothing is lost or sold twice."""
    ledger = Ledger()
    with failover_cluster(tmp_path, ledger) as cluster:
        nemesis = Nemesis(cluster)
        name = replica_in_role(cluster, tier, "primary")
        epoch = cluster.cluster_info()[tier]["epoch"]
        with failover_load(cluster, ledger):
            wait_for_acks(ledger, ACKS_BEFORE_FAULT, 0.0, "before the pause")
            with nemesis.paused(name) as pause:
                resumed_s = wait_writes_resume(ledger, pause, PAUSE_S)
                view = wait_dropped(cluster, name, epoch, primary=True)
                hold_load_until(pause.at_s + PAUSE_S, "the pause")
            expect(
                lambda: listed(cluster, name, ("in_sync",), epoch_above=view["epoch"]),
                REJOIN_DEADLINE_S,
                f"{name} in sync again after SIGCONT, in an epoch above {view['epoch']}",
                lambda: str(cluster.cluster_info()[tier]),
            )
            info = cluster.cluster_info()[tier]
            roles = {r["name"]: r["role"] for r in info["replicas"]}
            assert (info["primary"], roles[name]) == (view["primary"], "backup"), (
                f"after SIGCONT {name} must be a backup of {view['primary']}: {info}"
            )
            continued = nemesis.events[-1]
            wait_for_acks(ledger, ACKS_AFTER_RESUME, continued.at_s, "since SIGCONT")
            hold_load_until(continued.at_s + LOAD_AFTER_FAULT_S, "the load after SIGCONT")
        print(f"{pause.what}: first acknowledgement +{resumed_s:.3f} s; view {view}")
        check_load(ledger, nemesis.events)
        print(check_after_load(cluster, ledger))


# ---------------------------------------------------------------- 3: restarted by hand


def test_dead_backup_restarted_by_hand_catches_up_and_rejoins_in_a_new_epoch(
    tmp_path: Path,
) -> None:
    """kill -9 of the catalog backup under load; once it is listed down and writes have
    resumed, it is started again by hand (`bazar serve catalog --config ... --name ...`, the
    supervisor's command): it is listed `catching_up` or `in_sync`, and within 10 s `in_sync`
    in a newer epoch than the one that dropped it; every 503 arrives within 2 s of the kill
    (or of the restart), no read fails, and at the end its digests equal the primary's."""
    ledger = Ledger()
    with failover_cluster(tmp_path, ledger) as cluster, contextlib.ExitStack() as by_hand:
        nemesis = Nemesis(cluster)
        name = replica_in_role(cluster, "catalog", "backup")
        epoch = cluster.cluster_info()["catalog"]["epoch"]
        old_pid = int(replica(cluster, name)["pid"])
        with failover_load(cluster, ledger):
            wait_for_acks(ledger, ACKS_BEFORE_FAULT, 0.0, "before the kill")
            kill = nemesis.kill(name)
            wait_writes_resume(ledger, kill)
            dropped_epoch = wait_dropped(cluster, name, epoch, primary=False)["epoch"]
            hold_load_until(kill.at_s + LOAD_AFTER_FAULT_S, "the load after the kill")
            restart = nemesis.mark(f"{name} started by hand")
            by_hand.enter_context(served_by_hand(cluster, name))

            def seen() -> str:
                return str(cluster.cluster_info()["catalog"])

            states = ("catching_up", "in_sync")
            expect(
                lambda: listed(cluster, name, states, pid_other_than=old_pid),
                REJOIN_DEADLINE_S,
                f"{name} listed again, catching_up or in_sync, with its new pid",
                seen,
            )
            expect(
                lambda: listed(cluster, name, ("in_sync",), epoch_above=dropped_epoch),
                REJOIN_DEADLINE_S - (time.monotonic() - restart.at_s),
                f"{name} in_sync in an epoch above {dropped_epoch}, within 10 s of its start",
                seen,
            )
            wait_for_acks(ledger, ACKS_AFTER_RESUME, restart.at_s, "since the restart")
            hold_load_until(restart.at_s + LOAD_AFTER_FAULT_S, "the load after the restart")
        check_load(ledger, nemesis.events)
        print(check_after_load(cluster, ledger))


# ---------------------------------------------------------------- 4: two primaries of three


def test_three_catalog_replicas_survive_two_primary_kills_in_turn(tmp_path: Path) -> None:
    """With 3 catalog replicas: kill -9 of the catalog primary under load; once a backup is
    promoted, kill -9 of that one too: writes resume each time on the last replica, every 503
    arrives within 2 s of a kill, no read fails, nothing acknowledged is lost or sold twice."""
    ledger = Ledger()
    with failover_cluster(tmp_path, ledger, catalog_replicas=3) as cluster:
        nemesis = Nemesis(cluster)
        first = replica_in_role(cluster, "catalog", "primary")
        epoch = cluster.cluster_info()["catalog"]["epoch"]
        with failover_load(cluster, ledger):
            wait_for_acks(ledger, ACKS_BEFORE_FAULT, 0.0, "before the first kill")
            kill = nemesis.kill(first)
            wait_writes_resume(ledger, kill)
            view = wait_dropped(cluster, first, epoch, primary=True)
            expect(
                lambda: backups_in_sync(cluster, "catalog"),
                VIEW_DEADLINE_S,
                "the new catalog primary's backup in sync",
                lambda: str(cluster.cluster_info()["catalog"]),
            )
            hold_load_until(kill.at_s + LOAD_AFTER_FAULT_S, "the load after the first kill")
            second = str(view["primary"])
            kill = nemesis.kill(second)
            wait_writes_resume(ledger, kill)
            view = wait_dropped(cluster, second, view["epoch"], primary=True)
            hold_load_until(kill.at_s + LOAD_AFTER_FAULT_S, "the load after the second kill")
            wait_for_acks(ledger, ACKS_AFTER_RESUME, kill.at_s, "since the second kill")
        print(f"catalog after two kills: {view}")
        check_load(ledger, nemesis.events)
        print(check_after_load(cluster, ledger))


# ---------------------------------------------------------------- 5: cut off from the front end


def isolate(cluster: Cluster, url: str, cut: bool) -> None:
    status, body = cluster.json(
        "POST",
        "/internal/test/isolate",
        base=url,
        body=json.dumps({"frontend": cut}).encode(),
        headers={"Authorization": f"Bearer {cluster.secret}", "Content-Type": "application/json"},
    )
    assert status == 200, body


@pytest.mark.parametrize("tier", ["catalog", "order"])
def test_primary_cut_off_from_the_front_end_is_deposed_and_serves_nothing(
    tmp_path: Path, tier: str
) -> None:
    """The primary cut off from the front end only (a test hook drops its lease requests and
    invalidations; it still reaches its backups, and the order tier still reaches it): its
    lease runs out, a backup is promoted, writes resume within 2 s and no read fails; once
    deposed, it refuses reads and is not a primary for a health check (no stale read can
    come from it); healed, it rejoins as an in-sync backup in a newer epoch."""
    ledger = Ledger()
    with failover_cluster(tmp_path, ledger, test_hooks=True) as cluster:
        nemesis = Nemesis(cluster)
        name = replica_in_role(cluster, tier, "primary")
        url = str(replica(cluster, name)["url"])
        epoch = cluster.cluster_info()[tier]["epoch"]
        with failover_load(cluster, ledger):
            wait_for_acks(ledger, ACKS_BEFORE_FAULT, 0.0, "before the cut")
            cut = nemesis.mark(f"{name} cut off from the front end")
            isolate(cluster, url, True)
            resumed_s = wait_writes_resume(ledger, cut)
            view = wait_dropped(cluster, name, epoch, primary=True)
            read_path = "/books/1" if tier == "catalog" else "/orders?limit=1"
            status, body = cluster.internal("GET", url, read_path)
            assert (status, body["error"]["code"]) == (503, "unavailable"), body
            assert cluster.request("GET", "/primary", base=url)[0] == 503
            hold_load_until(cut.at_s + LOAD_AFTER_FAULT_S, "the load after the cut")
            healed = nemesis.mark(f"{name} healed")
            isolate(cluster, url, False)
            expect(
                lambda: listed(cluster, name, ("in_sync",), epoch_above=view["epoch"]),
                REJOIN_DEADLINE_S,
                f"{name} in sync again once healed, in an epoch above {view['epoch']}",
                lambda: str(cluster.cluster_info()[tier]),
            )
            wait_for_acks(ledger, ACKS_AFTER_RESUME, healed.at_s, "since the heal")
            hold_load_until(healed.at_s + LOAD_AFTER_FAULT_S, "the load after the heal")
        print(f"{cut.what}: first acknowledgement +{resumed_s:.3f} s; view {view}")
        check_load(ledger, nemesis.events)
        print(check_after_load(cluster, ledger))


# ---------------------------------------------------------------- 6: catch-up from a snapshot


LOG_ENTRIES_MAX = 20


def test_replica_behind_a_pruned_log_catches_up_from_a_snapshot(tmp_path: Path) -> None:
    """With a log bounded to 20 entries: kill -9 of the catalog backup under load, then,
    once the primary has committed well over 20 entries more (so it has pruned the ones the
    backup needs), start it again by hand: it is sent a snapshot of the primary's database
    (SQLite backup API) instead of entries, rejoins in sync in a newer epoch within 10 s,
    and ends identical (digests); no read fails, every 503 arrives within 2 s of an event."""
    ledger = Ledger()
    with (
        failover_cluster(tmp_path, ledger, log_entries_max=LOG_ENTRIES_MAX) as cluster,
        contextlib.ExitStack() as hand,
    ):
        nemesis = Nemesis(cluster)
        name = replica_in_role(cluster, "catalog", "backup")
        epoch = cluster.cluster_info()["catalog"]["epoch"]
        with failover_load(cluster, ledger):
            wait_for_acks(ledger, ACKS_BEFORE_FAULT, 0.0, "before the kill")
            kill = nemesis.kill(name)
            dropped_epoch = wait_dropped(cluster, name, epoch, primary=False)["epoch"]
            behind_seq = int(replica(cluster, name)["commit_seq"] or 0)

            def primary_ahead() -> bool:
                primary = replica(cluster, str(cluster.cluster_info()["catalog"]["primary"]))
                return int(primary["commit_seq"]) > behind_seq + 4 * LOG_ENTRIES_MAX

            expect(primary_ahead, 20.0, "the primary 80 entries ahead", lambda: "")
            hold_load_until(kill.at_s + LOAD_AFTER_FAULT_S, "the load after the kill")
            restart = nemesis.mark(f"{name} started by hand")
            hand.enter_context(served_by_hand(cluster, name))
            expect(
                lambda: listed(cluster, name, ("in_sync",), epoch_above=dropped_epoch),
                REJOIN_DEADLINE_S,
                f"{name} in sync again in an epoch above {dropped_epoch}",
                lambda: str(cluster.cluster_info()["catalog"]),
            )
            wait_for_acks(ledger, ACKS_AFTER_RESUME, restart.at_s, "since the restart")
        assert "transition=snapshot " in (cluster.data_dir / "logs" / f"{name}.log").read_text()
        check_load(ledger, nemesis.events)
        print(check_after_load(cluster, ledger))


# ---------------------------------------------------------------- 7: --min-in-sync 2


def test_min_in_sync_2_stops_writes_without_a_backup_and_never_reads(tmp_path: Path) -> None:
    """`--min-in-sync 2`: kill -9 of the catalog backup under load. Once it is dropped,
    purchases sent are not acknowledged (refused: fewer than 2 copies), `/health` is 503,
    and no read fails; started again by hand, it rejoins and writes resume; nothing is lost
    or sold twice (every key retried until definite sells exactly once)."""
    ledger = Ledger()
    with (
        failover_cluster(tmp_path, ledger, min_in_sync=2) as cluster,
        contextlib.ExitStack() as by_hand,
    ):
        nemesis = Nemesis(cluster)
        name = replica_in_role(cluster, "catalog", "backup")
        epoch = cluster.cluster_info()["catalog"]["epoch"]
        with failover_load(cluster, ledger):
            wait_for_acks(ledger, ACKS_BEFORE_FAULT, 0.0, "before the kill")
            kill = nemesis.kill(name)
            wait_dropped(cluster, name, epoch, primary=False)
            dropped_s = time.monotonic()
            assert cluster.request("GET", "/health")[0] == 503
            hold_load_until(dropped_s + LOAD_AFTER_FAULT_S, "the load without a backup")
            restart = nemesis.mark(f"{name} started by hand")
            by_hand.enter_context(served_by_hand(cluster, name))
            wait_for_acks(ledger, ACKS_AFTER_RESUME, restart.at_s, "since the restart")
        stopped = [
            a
            for a in ledger.attempts()
            if a.status == 200 and dropped_s < a.invoke_s and a.complete_s < restart.at_s
        ]
        assert stopped == [], f"{len(stopped)} purchases acknowledged on one copy"
        check_reads(ledger, nemesis.events)
        print(f"{kill.what}: writes stopped until the restart")
        print(check_after_load(cluster, ledger))


# ---------------------------------------------------------------- 8: backup, then primary


def test_backup_then_primary_dead_the_stale_backup_is_never_promoted(tmp_path: Path) -> None:
    """kill -9 of the catalog backup (dropped: writes go on, on the primary alone), then of
    the primary. The backup, restarted by hand, lacks what the primary committed alone: it
    must never be promoted (no acknowledged write lost), so the tier takes no sale until the
    old primary is back. Restarted by hand too, the primary serves again, the backup catches
    up from it, and every acknowledged purchase is there. (Reads are not judged here: while
    no in-sync replica is up, the tier has nothing it may serve them from.)"""
    ledger = Ledger()
    with failover_cluster(tmp_path, ledger) as cluster, contextlib.ExitStack() as by_hand:
        nemesis = Nemesis(cluster)
        backup = replica_in_role(cluster, "catalog", "backup")
        primary = replica_in_role(cluster, "catalog", "primary")
        epoch = cluster.cluster_info()["catalog"]["epoch"]
        with failover_load(cluster, ledger):
            wait_for_acks(ledger, ACKS_BEFORE_FAULT, 0.0, "before the kills")
            first = nemesis.kill(backup)
            epoch = wait_dropped(cluster, backup, epoch, primary=False)["epoch"]
            wait_for_acks(ledger, ACKS_AFTER_RESUME, first.at_s, "on the primary alone")
            second = nemesis.kill(primary)
            by_hand.enter_context(served_by_hand(cluster, backup))
            expect(
                lambda: listed(cluster, backup, ("catching_up",)),
                REJOIN_DEADLINE_S,
                f"{backup} back, catching up",
                lambda: str(cluster.cluster_info()["catalog"]),
            )
            hold_load_until(time.monotonic() + LOAD_AFTER_FAULT_S, "the load without a primary")
            info = cluster.cluster_info()["catalog"]
            assert info["primary"] == primary, f"{backup} was promoted while stale: {info}"
            acked = [a for a in ledger.attempts() if a.status == 200]
            assert all(a.invoke_s < second.at_s for a in acked), "a sale without a primary"
            back = nemesis.mark(f"{primary} started by hand")
            by_hand.enter_context(served_by_hand(cluster, primary))
            wait_for_acks(ledger, ACKS_AFTER_RESUME, back.at_s, "once the primary is back")
            expect(
                lambda: listed(cluster, backup, ("in_sync",), epoch_above=epoch),
                REJOIN_DEADLINE_S,
                f"{backup} in sync again, caught up from {primary}",
                lambda: str(cluster.cluster_info()["catalog"]),
            )
        print(check_after_load(cluster, ledger))
