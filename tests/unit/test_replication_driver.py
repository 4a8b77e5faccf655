"""The one driver (`replication/driver.py`): the order in which a step's effects happen.

Each test runs the production driver (`testing/drive.py`) over a store and a host that write
every durable call and every send, answer and reply to one shared journal, so that the
order of persists, sends and answers is what is asserted: nothing is sent and no caller is
answered before what it depends on is durable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bazar.errors import Abandoned, BazarError, NotPrimary, Refused, Unavailable
from bazar.frontend.views import initial_view, next_view
from bazar.replication.driver import SAFE, Controls, boot
from bazar.replication.ready import Send, Stage
from bazar.replication.replica import Replica, Timing
from bazar.testing.drive import Process, RecordingHost, apply, start, write
from bazar.testing.sim_machines import Buy, Outcome
from bazar.testing.sim_store import SimStore
from bazar.wire import (
    Append,
    AppendReply,
    CommitPoint,
    Entry,
    LeaseReply,
    LeaseRequest,
    Member,
    Upsert,
    View,
)

TIMING = Timing(lease_ms=1000, lease_renew_ms=100)
MEMBERS = tuple(Member(name=name, url=name) for name in ("r1", "r2"))
V1 = initial_view("catalog", MEMBERS)
Journal = list[str]


class JournalStore(SimStore):
    """`SimStore`, writing each durable call to the journal as it returns."""

    journal: Journal

    def stage(self, plan: Stage) -> None:
        super().stage(plan)
        self.journal.append(f"stage commit_seq={plan.commit_seq}")

    def commit_batch(self, entry: Entry) -> None:
        super().commit_batch(entry)
        self.journal.append(f"commit seq={entry.seq}")

    def rollback_batch(self) -> None:
        super().rollback_batch()
        self.journal.append("rollback")


@dataclass(slots=True)
class JournalHost(RecordingHost):
    journal: Journal = field(default_factory=list)

    def transmit(self, send: Send) -> None:
        RecordingHost.transmit(self, send)
        self.journal.append(f"send {type(send.message).__name__} to {send.to}")

    def settle(self, handle: str, result: Outcome | None, error: BazarError | None) -> None:
        RecordingHost.settle(self, handle, result, error)
        self.journal.append(f"settle {handle}")

    def reply(self, handle: str, reply: AppendReply) -> None:
        RecordingHost.reply(self, handle, reply)
        self.journal.append(f"reply {handle} {reply.status}")


def replica(name: str, controls: Controls = SAFE) -> tuple[Process, JournalHost, Journal]:
    journal: Journal = []
    store = JournalStore(initial={1: 10})
    store.journal = journal
    host = JournalHost(journal=journal)
    process = start(name, store, timing=TIMING, host=host, controls=controls)
    return process, host, journal


def answer(host: RecordingHost) -> dict[str, Outcome | BazarError]:
    answers: dict[str, Outcome | BazarError] = {}
    for settled in host.settled:
        found = settled.result if settled.error is None else settled.error
        assert found is not None
        answers[settled.handle] = found
    return answers


def lease(process: Process, host: RecordingHost, view: View, now_ms: int) -> None:
    """Renew the lease at `now_ms` and answer it with `view`."""
    apply(process, process.core.tick, now_ms=now_ms)
    request = [s for s in host.sent if isinstance(s.message, LeaseRequest)][-1]
    reply = LeaseReply(views={"catalog": view}, granted=True)
    apply(process, process.driver.answered(request, reply))


def appends_to(host: RecordingHost, peer: str) -> list[Append]:
    return [s.message for s in host.sent if s.to == peer and isinstance(s.message, Append)]


def primary_and_backup() -> tuple[Process, JournalHost, Journal, Process, JournalHost, Journal]:
    r1, h1, j1 = replica("r1")
    r2, h2, j2 = replica("r2")
    lease(r1, h1, V1, 0)
    lease(r2, h2, V1, 0)
    assert (r1.core.role, r2.core.role) == ("primary", "backup")
    return r1, h1, j1, r2, h2, j2


def deliver(backup: Process, message: Append, handle: str) -> None:
    apply(backup, lambda now_ms: backup.core.on_append(message, now_ms), reply_to=handle)


def test_a_backup_acknowledges_an_append_only_after_staging_it() -> None:
    r1, h1, _, r2, h2, j2 = primary_and_backup()
    write(r1, [Buy("k", 1, 1)])
    [message] = appends_to(h1, "r2")
    j2.clear()
    deliver(r2, message, "append")
    assert j2 == ["stage commit_seq=0", "reply append ok"]
    assert h2.replies[-1][1].last_seq == 1


def test_a_batch_is_answered_only_after_its_commit_is_durable() -> None:
    r1, h1, j1, r2, h2, _ = primary_and_backup()
    write(r1, [Buy("k", 1, 2)])
    assert "k" not in answer(h1)  # every backup must stage it first
    [message] = appends_to(h1, "r2")
    deliver(r2, message, "append")
    j1.clear()
    apply(r1, r1.driver.answered(Send(to="r2", message=message), h2.replies[-1][1]))
    assert j1[:2] == ["commit seq=1", "settle k"]
    assert answer(h1)["k"] == Outcome(status="ok")


def test_a_view_that_deposes_the_primary_rolls_its_batch_back_then_answers_indefinitely() -> None:
    r1, h1, j1, _, _, _ = primary_and_backup()
    write(r1, [Buy("k", 1, 1), Buy("q", 1, 1)])  # one batch of two
    j1.clear()
    lease(r1, h1, next_view(V1, primary="r2", backups=()), TIMING.lease_renew_ms)
    assert j1.index("rollback") < j1.index("settle k")
    assert isinstance(answer(h1)["k"], Abandoned)
    assert not Abandoned.definite  # it may be staged on r2, which may commit it


def test_a_batch_whose_lease_ran_out_while_it_executed_is_refused_definitely() -> None:
    r1, h1, j1, _, _, _ = primary_and_backup()
    driver = r1.driver
    driver.submit(Buy("k", 1, 1), "k")
    taken = driver.take_batch()
    assert taken is not None
    entry, results = driver.begin(taken)
    h1.now = TIMING.lease_ms + 1  # a pause while the batch executed
    ready = driver.propose(taken, entry, results)
    assert ready is not None
    driver.persist(ready)
    driver.complete(ready)
    assert j1[-2:] == ["rollback", "settle k"]
    assert isinstance(answer(h1)["k"], Refused)
    assert Refused.definite
    assert appends_to(h1, "r2") == []  # never sent
    assert r1.store.open is None


def test_queued_writes_are_refused_definitely_when_the_replica_stops_being_primary() -> None:
    r1, h1, _, _, _, _ = primary_and_backup()
    r1.driver.submit(Buy("k", 1, 1), "queued")
    lease(r1, h1, next_view(V1, primary="r2", backups=()), TIMING.lease_renew_ms)
    assert isinstance(answer(h1)["queued"], NotPrimary)
    with pytest.raises(NotPrimary):
        r1.driver.submit(Buy("late", 1, 1), "late")


def test_a_write_is_refused_before_it_is_queued_without_a_lease() -> None:
    r1, h1, _, _, _, _ = primary_and_backup()
    h1.now = TIMING.lease_ms + 5
    with pytest.raises(Refused):
        r1.driver.submit(Buy("k", 1, 1), "k")
    assert r1.driver.queue == []


def test_a_backup_answers_no_commit_query_and_a_read_with_a_replaced_entry_is_refused() -> None:
    r1, h1, _, r2, _, _ = primary_and_backup()
    with pytest.raises(Unavailable):
        r2.driver.commit_point_for_backups()
    assert r1.driver.commit_point_for_backups() == CommitPoint(epoch=0, commit_seq=0)
    write(r1, [Buy("k", 1, 1)])
    deliver(r2, appends_to(h1, "r2")[0], "append")
    check = r2.driver.read_check("books", {1})
    assert check is not None  # book 1 has a staged write: ask the primary
    assert r2.driver.read_check("books", {2}) is None
    # A newer primary's Append replaces the staged entry while the read waits.
    other = Entry(epoch=2, seq=1, changes=[Upsert(table="books", row={"id": 1, "stock": 3})])
    newer = Append(epoch=2, primary="r3", prev_seq=0, prev_epoch=0, entries=[other], commit_seq=0)
    deliver(r2, newer, "newer")
    with pytest.raises(Unavailable):
        r2.driver.read_checked(check, CommitPoint(epoch=1, commit_seq=1))


def test_reply_before_persist_control_answers_before_the_stage() -> None:
    """The control does what the simulator's control test relies on."""
    r1, h1, _, _, _, _ = primary_and_backup()
    r2, h2, j2 = replica("r2", Controls(reply_before_persist=True))
    lease(r2, h2, V1, 0)
    write(r1, [Buy("k", 1, 1)])
    j2.clear()
    deliver(r2, appends_to(h1, "r2")[0], "append")
    assert j2 == ["reply append ok", "stage commit_seq=0"]


def test_one_step_at_a_time() -> None:
    r1, _, _, _, _, _ = primary_and_backup()
    r1.driver.decide(r1.core.tick)
    with pytest.raises(AssertionError):
        r1.driver.decide(r1.core.tick)


def test_boot_restores_the_staged_suffix_and_never_reuses_the_epoch() -> None:
    r1, h1, _, r2, _, _ = primary_and_backup()
    write(r1, [Buy("k", 1, 1)])
    deliver(r2, appends_to(h1, "r2")[0], "append")
    restarted: Replica = boot(
        r2.store, name="r2", tier="catalog", pid=2, incarnation="b", timing=TIMING
    )
    assert sorted(restarted.staged) == [1]
    assert restarted.boot_epoch == restarted.epoch == 1


def test_a_new_primary_answers_no_commit_query_until_its_promoted_suffix_is_on_disk() -> None:
    """Found by `tests/fault/test_membership.py` (a stale read after a switchover): the new
    primary decides to apply the staged suffix it promotes (the old primary committed it,
    and readers saw it), and until that Stage is on disk its database's commit point is
    below it. A backup holding the entry staged asked then, and served the older value."""
    members = tuple(Member(name=name, url=name) for name in ("r1", "r2", "r3"))
    v1 = initial_view("catalog", members)
    r1, h1, _ = replica("r1")
    r2, h2, _ = replica("r2")
    r3, h3, _ = replica("r3")
    for process, host in ((r1, h1), (r2, h2), (r3, h3)):
        lease(process, host, v1, 0)
    write(r1, [Buy("k", 1, 1)])
    for peer, host in (("r2", h2), ("r3", h3)):
        process = r2 if peer == "r2" else r3
        deliver(process, appends_to(h1, peer)[-1], "append")
        reply = host.replies[-1][1]
        apply(r1, r1.driver.answered(Send(to=peer, message=appends_to(h1, peer)[-1]), reply))
    assert r1.store.commit_seq == 1  # committed (and answered) by r1; staged on r2 and r3
    v2 = next_view(v1, primary="r2", backups=("r3", "r1"))  # a switchover to r2
    now = TIMING.lease_renew_ms
    for process, host in ((r1, h1), (r3, h3), (r2, h2)):
        lease(process, host, v2, now)
    assert r2.core.promoting
    for peer, process in (("r3", r3), ("r1", r1)):
        message = appends_to(h2, peer)[-1]
        deliver(process, message, "promotion")
        reply = (h3 if peer == "r3" else h1).replies[-1][1]
        event = r2.driver.answered(Send(to=peer, message=message), reply)
        if peer == "r1":  # the last ack: the promotion's Stage is decided, not yet on disk
            ready = r2.driver.decide(event)
            assert not r2.core.promoting
            with pytest.raises(Unavailable):
                r2.driver.commit_point_for_backups()
            r2.driver.persist(ready)
            r2.driver.complete(ready)
        else:
            apply(r2, event)
    assert r2.driver.commit_point_for_backups().commit_seq == 1
