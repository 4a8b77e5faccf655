"""The one driver (`replication/driver.py`): the order in which a step's effects happen.

Each test runs the production driver over a recording store (the simulator's in-memory
store, which keeps SQLite's transaction rules, with every call written to a shared journal)
and a recording host (sends, answers and replies written to the same journal), so that the
order of persists, sends and answers is what is asserted: nothing is sent and no caller is
answered before what it depends on is durable.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from bazar.errors import Abandoned, BazarError, NotPrimary, Refused, Unavailable
from bazar.frontend.views import initial_view, next_view
from bazar.replication.driver import SAFE, Controls, Driver, boot
from bazar.replication.ready import Ready, Send, Stage
from bazar.replication.replica import Replica, Timing
from bazar.testing.sim_machines import Buy, Command, Outcome
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


class RecordingStore(SimStore):
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

    def save_epoch(self, epoch: int) -> None:
        super().save_epoch(epoch)
        self.journal.append(f"save_epoch {epoch}")


class RecordingHost:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.now = 0
        self.sent: list[Send] = []
        self.settled: dict[str, Outcome | BazarError] = {}
        self.replies: dict[str, AppendReply] = {}

    def now_ms(self) -> int:
        return self.now

    def transmit(self, send: Send) -> None:
        self.sent.append(send)
        self.journal.append(f"send {type(send.message).__name__} to {send.to}")

    def settle(self, handle: str, result: Outcome | None, error: BazarError | None) -> None:
        answer: Outcome | BazarError | None = result if error is None else error
        assert answer is not None
        self.settled[handle] = answer
        self.journal.append(f"settle {handle}")

    def reply(self, handle: str, reply: AppendReply) -> None:
        self.replies[handle] = reply
        self.journal.append(f"reply {handle} {reply.status}")

    def log(self, line: str) -> None:
        del line


Node = Driver[Command, Outcome, str]


def replica(name: str, controls: Controls = SAFE) -> tuple[Node, RecordingHost, Journal]:
    journal: Journal = []
    store = RecordingStore(initial={1: 10})
    store.journal = journal
    host = RecordingHost(journal)
    core = boot(store, name=name, tier="catalog", pid=1, incarnation=name, timing=TIMING)
    driver: Node = Driver(core, store, host, batch_commands_max=4, queued_max=8, controls=controls)
    return driver, host, journal


def step(driver: Node, event: Callable[[int], Ready], reply_to: str | None = None) -> Ready:
    ready = driver.decide(event, reply_to)
    driver.persist(ready)
    driver.complete(ready, reply_to)
    return ready


def lease(driver: Node, host: RecordingHost, view: View) -> None:
    """Renew the lease and answer it with `view`."""
    step(driver, driver.core.tick)
    request = next(s for s in reversed(host.sent) if isinstance(s.message, LeaseRequest)).message
    assert isinstance(request, LeaseRequest)
    reply = LeaseReply(views={"catalog": view}, granted=True)
    step(driver, driver.answered(Send(to="frontend", message=request), reply))


def batch(driver: Node) -> Entry:
    """Run the queued writes as one batch (the host's batch loop); its entry."""
    taken = driver.take_batch()
    assert taken is not None
    entry, results = driver.begin(taken)
    assert entry is not None
    ready = driver.propose(taken, entry, results)
    assert ready is not None
    driver.persist(ready)
    driver.complete(ready)
    return entry


def appends_to(host: RecordingHost, peer: str) -> list[Append]:
    return [s.message for s in host.sent if s.to == peer and isinstance(s.message, Append)]


def primary_and_backup() -> tuple[Node, RecordingHost, Journal, Node, RecordingHost, Journal]:
    r1, h1, j1 = replica("r1")
    r2, h2, j2 = replica("r2")
    lease(r1, h1, V1)
    lease(r2, h2, V1)
    assert (r1.core.role, r2.core.role) == ("primary", "backup")
    return r1, h1, j1, r2, h2, j2


def deliver(backup: Node, message: Append, handle: str) -> None:
    step(backup, partial(backup.core.on_append, message), handle)


def test_a_backup_acknowledges_an_append_only_after_staging_it() -> None:
    r1, h1, _, r2, h2, j2 = primary_and_backup()
    r1.submit(Buy("k", 1, 1), "buyer")
    batch(r1)
    [message] = appends_to(h1, "r2")
    j2.clear()
    deliver(r2, message, "append")
    assert j2 == ["stage commit_seq=0", "reply append ok"]
    assert h2.replies["append"].last_seq == 1


def test_a_batch_is_answered_only_after_its_commit_is_durable() -> None:
    r1, h1, j1, r2, h2, _ = primary_and_backup()
    r1.submit(Buy("k", 1, 2), "buyer")
    batch(r1)
    assert "buyer" not in h1.settled  # every backup must stage it first
    [message] = appends_to(h1, "r2")
    deliver(r2, message, "append")
    j1.clear()
    reply = h2.replies["append"]
    step(r1, r1.answered(Send(to="r2", message=message), reply))
    assert j1[:2] == ["commit seq=1", "settle buyer"]
    assert h1.settled["buyer"] == Outcome(status="ok")


def test_a_view_that_deposes_the_primary_rolls_its_batch_back_then_answers_indefinitely() -> None:
    r1, h1, j1, _, _, _ = primary_and_backup()
    r1.submit(Buy("k", 1, 1), "buyer")
    r1.submit(Buy("q", 1, 1), "queued")  # (joins the same batch: up to 4 commands)
    batch(r1)
    j1.clear()
    deposed = next_view(V1, primary="r2", backups=())
    reply = LeaseReply(views={"catalog": deposed}, granted=True)
    h1.now = TIMING.lease_renew_ms  # the next renewal is due
    step(r1, r1.core.tick)
    request = [s for s in h1.sent if isinstance(s.message, LeaseRequest)][-1]
    step(r1, r1.answered(request, reply))
    assert j1.index("rollback") < j1.index("settle buyer")
    assert isinstance(h1.settled["buyer"], Abandoned)
    assert not h1.settled["buyer"].definite  # it may be staged on r2, which may commit it


def test_a_batch_whose_lease_ran_out_while_it_executed_is_refused_definitely() -> None:
    r1, h1, j1, _, _, _ = primary_and_backup()
    r1.submit(Buy("k", 1, 1), "buyer")
    taken = r1.take_batch()
    assert taken is not None
    entry, results = r1.begin(taken)
    h1.now = TIMING.lease_ms + 1  # a pause while the batch executed
    ready = r1.propose(taken, entry, results)
    assert ready is not None
    r1.persist(ready)
    r1.complete(ready)
    assert j1[-2:] == ["rollback", "settle buyer"]
    assert isinstance(h1.settled["buyer"], Refused)
    assert h1.settled["buyer"].definite
    assert appends_to(h1, "r2") == []  # never sent
    assert isinstance(r1.store, SimStore)
    assert r1.store.open is None


def test_queued_writes_are_refused_definitely_when_the_replica_stops_being_primary() -> None:
    r1, h1, _, _, _, _ = primary_and_backup()
    r1.submit(Buy("k", 1, 1), "queued")
    h1.now = TIMING.lease_renew_ms  # the next renewal is due
    step(r1, r1.core.tick)
    request = [s for s in h1.sent if isinstance(s.message, LeaseRequest)][-1]
    deposed = next_view(V1, primary="r2", backups=())
    step(r1, r1.answered(request, LeaseReply(views={"catalog": deposed}, granted=True)))
    assert isinstance(h1.settled["queued"], NotPrimary)
    with pytest.raises(NotPrimary):
        r1.submit(Buy("late", 1, 1), "late")


def test_a_write_is_refused_before_it_is_queued_without_a_lease() -> None:
    r1, h1, _, _, _, _ = primary_and_backup()
    h1.now = TIMING.lease_ms + 5
    with pytest.raises(Refused):
        r1.submit(Buy("k", 1, 1), "buyer")
    assert r1.queue == []


def test_a_backup_answers_no_commit_query_and_a_read_with_a_replaced_entry_is_refused() -> None:
    r1, h1, _, r2, _, _ = primary_and_backup()
    with pytest.raises(Unavailable):
        r2.commit_point_for_backups()
    assert r1.commit_point_for_backups() == CommitPoint(epoch=0, commit_seq=0)
    r1.submit(Buy("k", 1, 1), "buyer")
    batch(r1)
    deliver(r2, appends_to(h1, "r2")[0], "append")
    check = r2.read_check("books", {1})
    assert check is not None  # book 1 has a staged write: ask the primary
    assert r2.read_check("books", {2}) is None
    # A newer primary's Append replaces the staged entry while the read waits.
    other = Entry(epoch=2, seq=1, changes=[Upsert(table="books", row={"id": 1, "stock": 3})])
    newer = Append(epoch=2, primary="r3", prev_seq=0, prev_epoch=0, entries=[other], commit_seq=0)
    deliver(r2, newer, "newer")
    with pytest.raises(Unavailable):
        r2.read_checked(check, CommitPoint(epoch=1, commit_seq=1))


def test_reply_before_persist_control_answers_before_the_stage() -> None:
    """The control does what the simulator's control test relies on."""
    r1, h1, _, _, _, _ = primary_and_backup()
    r2, h2, j2 = replica("r2", Controls(reply_before_persist=True))
    lease(r2, h2, V1)
    r1.submit(Buy("k", 1, 1), "buyer")
    batch(r1)
    j2.clear()
    deliver(r2, appends_to(h1, "r2")[0], "append")
    assert j2 == ["reply append ok", "stage commit_seq=0"]


def test_one_step_at_a_time() -> None:
    r1, _, _, _, _, _ = primary_and_backup()
    r1.decide(r1.core.tick)
    with pytest.raises(AssertionError):
        r1.decide(r1.core.tick)


def test_boot_restores_the_staged_suffix_and_never_reuses_the_epoch() -> None:
    r1, h1, _, r2, _, _ = primary_and_backup()
    r1.submit(Buy("k", 1, 1), "buyer")
    batch(r1)
    deliver(r2, appends_to(h1, "r2")[0], "append")
    store = r2.store
    restarted: Replica = boot(
        store, name="r2", tier="catalog", pid=2, incarnation="b", timing=TIMING
    )
    assert sorted(restarted.staged) == [1]
    assert restarted.boot_epoch == restarted.epoch == 1
