"""The pure replica core: roles, fencing, staging, commit points, truncation, CRAQ reads."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bazar.core.replica import AppendPlan, Replica
from bazar.wire import Append, AppendReply, Entry, Member, Upsert, View

KEYS = {"books": "id"}


def view(epoch: int, primary: str = "r1", backups: tuple[str, ...] = ("r2",)) -> View:
    members = tuple(Member(name=n, url=f"http://{n}") for n in ("r1", "r2", "r3"))
    return View(tier="catalog", epoch=epoch, primary=primary, backups=backups, members=members)


def replica(name: str = "r2", *, boot_epoch: int = 0, commit_seq: int = 0) -> Replica:
    return Replica(
        name=name,
        tier="catalog",
        pid=1,
        incarnation="i",
        boot_epoch=boot_epoch,
        epoch=boot_epoch,
        commit_seq=commit_seq,
        commit_epoch=1 if commit_seq else 0,
    )


def entry(epoch: int, seq: int, book: int = 1, stock: int = 5) -> Entry:
    return Entry(
        epoch=epoch, seq=seq, changes=[Upsert(table="books", row={"id": book, "stock": stock})]
    )


def append(epoch: int, prev: tuple[int, int], entries: list[Entry], commit_seq: int) -> Append:
    return Append(
        epoch=epoch,
        primary="r1",
        prev_epoch=prev[0],
        prev_seq=prev[1],
        entries=entries,
        commit_seq=commit_seq,
    )


def deliver(backup: Replica, message: Append) -> AppendPlan:
    plan = backup.plan_append(message)
    backup.on_persisted(plan)
    return plan


def test_first_view_makes_the_first_replica_primary() -> None:
    primary = replica("r1")
    assert primary.install_view(view(1))
    assert primary.role == "primary"


def test_restarted_primary_does_not_serve_in_an_epoch_it_has_seen() -> None:
    primary = replica("r1", boot_epoch=1)
    primary.install_view(view(1))
    assert primary.status().role == "none"
    assert primary.status().boot_epoch >= 1
    primary.install_view(view(2))
    assert primary.status().role == "primary"


def test_replica_ignores_an_older_view() -> None:
    backup = replica("r2", boot_epoch=3)
    assert not backup.install_view(view(2))
    assert backup.role == "none"


def test_backup_stages_then_applies_at_the_commit_point() -> None:
    backup = replica()
    backup.install_view(view(1))
    plan = deliver(backup, append(1, (0, 0), [entry(1, 1)], commit_seq=0))
    assert plan.reply.status == "ok"
    assert plan.stage == (entry(1, 1),)
    assert plan.apply == ()
    assert backup.last_seq == 1
    assert backup.commit_seq == 0
    plan = deliver(backup, append(1, (1, 1), [entry(1, 2)], commit_seq=1))
    assert [e.seq for e in plan.apply] == [1]
    assert backup.commit_seq == 1
    assert backup.last_seq == 2


def test_backup_rejects_an_append_from_a_stale_epoch() -> None:
    backup = replica(boot_epoch=2)
    backup.install_view(view(2))
    plan = backup.plan_append(append(1, (0, 0), [entry(1, 1)], commit_seq=0))
    assert plan.reply.status == "stale_epoch"
    assert plan.reply.epoch == 2
    assert not plan.writes


def test_backup_reports_a_gap_instead_of_skipping_entries() -> None:
    backup = replica()
    backup.install_view(view(1))
    plan = deliver(backup, append(1, (1, 3), [entry(1, 4)], commit_seq=3))
    assert plan.reply.status == "gap"
    assert plan.reply.last_seq == 0
    assert backup.last_seq == 0


def test_duplicate_append_is_acknowledged_without_writing_twice() -> None:
    backup = replica()
    backup.install_view(view(1))
    deliver(backup, append(1, (0, 0), [entry(1, 1)], commit_seq=0))
    plan = deliver(backup, append(1, (0, 0), [entry(1, 1)], commit_seq=0))
    assert plan.reply.status == "ok"
    assert plan.stage == ()
    assert plan.reply.last_seq == 1


def test_staged_entry_from_an_older_epoch_is_replaced() -> None:
    backup = replica()
    backup.install_view(view(1))
    deliver(backup, append(1, (0, 0), [entry(1, 1, stock=4)], commit_seq=0))
    plan = deliver(backup, append(2, (0, 0), [entry(2, 1, stock=3)], commit_seq=0))
    assert plan.truncate_from == 1
    assert backup.staged[1].epoch == 2
    assert backup.epoch == 2


def test_mismatch_at_prev_seq_truncates_and_asks_for_more() -> None:
    backup = replica()
    backup.install_view(view(1))
    deliver(backup, append(1, (0, 0), [entry(1, 1)], commit_seq=0))
    plan = deliver(backup, append(2, (2, 1), [entry(2, 2)], commit_seq=1))
    assert plan.reply.status == "gap"
    assert plan.truncate_from == 1
    assert backup.last_seq == 0
    assert backup.commit_seq == 0


def test_primary_verdicts_on_replies() -> None:
    primary = replica("r1")
    primary.install_view(view(1))
    ok = AppendReply(status="ok", epoch=1, last_seq=1, commit_seq=0)
    gap = AppendReply(status="gap", epoch=1, last_seq=0, commit_seq=0)
    stale = AppendReply(status="stale_epoch", epoch=2, last_seq=0, commit_seq=0)
    assert primary.on_append_reply("r2", 1, ok) == "acked"
    assert primary.on_append_reply("r2", 2, gap) == "resend"
    assert primary.resend_from("r2") == 1
    assert primary.on_append_reply("r2", 1, stale) == "deposed"


def test_dirty_rows_and_the_committed_overlay() -> None:
    backup = replica()
    backup.install_view(view(1))
    deliver(backup, append(1, (0, 0), [entry(1, 1, book=3)], commit_seq=0))
    assert backup.dirty(KEYS, "books") == {3}
    assert backup.committed_overlay(0) == []
    assert backup.committed_overlay(1) == [entry(1, 1, book=3)]


def test_promotion_applies_what_was_staged() -> None:
    r2 = replica("r2")
    r2.install_view(view(1))
    deliver(r2, append(1, (0, 0), [entry(1, 1)], commit_seq=0))
    r2.install_view(view(2, primary="r2", backups=()))
    assert r2.needs_promotion()
    r2.on_persisted(r2.promotion_plan())
    assert r2.commit_seq == 1
    assert not r2.staged
    assert r2.next_seq() == 2


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), writes=st.integers(1, 30))
def test_lossy_duplicating_reordering_network_keeps_backup_a_prefix(seed: int, writes: int) -> None:
    """A primary writes `writes` entries; every Append may be lost, duplicated or delayed.
    The backup's committed log is always a prefix of the primary's, and once the primary has
    committed everything and the network delivers, the backup converges to it."""
    rng = random.Random(seed)
    primary = replica("r1")
    primary.install_view(view(1))
    backup = replica("r2")
    backup.install_view(view(1))
    log: list[Entry] = []
    applied: list[Entry] = []
    in_flight: list[Append] = []
    for seq in range(1, writes + 1):
        new = entry(1, seq, stock=seq)
        entries, prev_epoch = [new], primary.commit_epoch
        while True:
            in_flight.append(primary.append_for(entries, prev_epoch))
            rng.shuffle(in_flight)
            reply = None
            while in_flight:
                message = in_flight.pop()
                if rng.random() < 0.3:
                    continue  # lost
                if rng.random() < 0.2:
                    in_flight.insert(0, message)  # duplicated, delivered again later
                plan = deliver(backup, message)
                applied.extend(plan.apply)
                if message.entries and message.entries[-1].seq == seq:
                    reply = plan.reply
                    break
            assert applied == log[: len(applied)]  # the backup applies exactly our prefix
            assert backup.commit_seq == len(applied) <= primary.commit_seq
            if reply is None:
                continue
            verdict = primary.on_append_reply("r2", seq, reply)
            assert verdict != "deposed"
            if verdict == "acked":
                break
            first = primary.resend_from("r2")
            entries = [*log[first - 1 :], new]
            prev_epoch = log[first - 2].epoch if first >= 2 else 0
        log.append(new)
        primary.on_commit(new)
    applied.extend(deliver(backup, primary.heartbeat_append()).apply)
    assert backup.commit_seq == primary.commit_seq == writes
    assert applied == log
    assert not backup.staged


@pytest.mark.parametrize("boot_epoch", [0, 1, 5])
def test_status_reports_the_log_position(boot_epoch: int) -> None:
    r = replica("r2", boot_epoch=boot_epoch)
    status = r.status()
    assert status.boot_epoch == boot_epoch
    assert (status.last_seq, status.commit_seq) == (0, 0)


def test_primary_that_failed_to_replicate_steps_down_until_a_new_epoch() -> None:
    primary = replica("r1")
    primary.install_view(view(1))
    seq = primary.next_seq()
    primary.step_down()
    assert primary.status().role == "none"
    assert primary.status().boot_epoch == 1  # the view manager sees it and raises the epoch
    primary.install_view(view(2))
    assert primary.status().role == "primary"
    assert primary.next_seq() == seq  # same seq, but a new epoch: a different log position
    assert primary.epoch == 2


def test_truncation_is_counted_for_reads_in_flight() -> None:
    backup = replica()
    backup.install_view(view(1))
    deliver(backup, append(1, (0, 0), [entry(1, 1)], commit_seq=0))
    assert backup.truncations == 0
    deliver(backup, append(2, (0, 0), [entry(2, 1)], commit_seq=0))
    assert backup.truncations == 1
