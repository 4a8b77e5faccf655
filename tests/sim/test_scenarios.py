"""Hand-driven scenarios over the replica core and the simulator's store, for interleavings
too rare to trust to random seeds. Each replica is the production driver
(`replication/driver.py`) over a `SimStore`, which keeps SQLite's transaction rules, started
from it by `driver.boot` (`testing/drive.py`); the test chooses each step and delivers the
messages it chooses, in the order it chooses.
"""

from __future__ import annotations

from bazar.frontend.views import initial_view, next_view
from bazar.replication.ready import Ready
from bazar.replication.replica import Timing
from bazar.testing.drive import Process, apply, start, write
from bazar.testing.sim_store import Buy, SimStore
from bazar.wire import Append, LeaseReply, LeaseRequest, Member, View

MEMBERS = tuple(Member(name=name, url=name) for name in ("r1", "r2", "r3"))
TIMING = Timing(lease_ms=1000, lease_renew_ms=100)


def boot(name: str, store: SimStore, incarnation: int) -> Process:
    """A process started from its store, as `ReplicaRuntime.__init__` does."""
    return start(name, store, timing=TIMING, pid=incarnation)


def lease(process: Process, view: View, now_ms: int) -> Ready:
    apply(process, process.core.tick, now_ms=now_ms)
    return grant(process, view, now_ms)


def grant(process: Process, view: View, now_ms: int) -> Ready:
    """Answer the lease request in flight (it must be one)."""
    assert process.core.lease_sent is not None
    seq = process.core.lease_sent[0]
    (send,) = [
        send
        for send in process.host.sent
        if isinstance(send.message, LeaseRequest) and send.message.seq == seq
    ]
    answered = process.driver.answered(send, LeaseReply(views={"catalog": view}))
    return apply(process, answered, now_ms=now_ms)


def appends(ready: Ready, to: str) -> list[Append]:
    return [s.message for s in ready.send if s.to == to and isinstance(s.message, Append)]


def test_primary_never_acts_in_an_epoch_its_store_has_not_recorded() -> None:
    """A primary keeps its role across a view that drops a silent backup, with its batch
    open. If it sent Appends of the new epoch while that epoch was recorded only inside the
    batch's open transaction, a crash would lose the record; restarted, the process would be
    primary of that epoch a second time, and a late Append of the dead process (same epoch,
    the old entry) would replace the new process's committed entry on a backup, which a
    failover then commits instead (an acknowledged write lost)."""
    v1 = initial_view("catalog", MEMBERS)
    v2 = next_view(v1, backups=("r2",))  # r3 dropped, r1 still primary
    store = SimStore(initial={1: 10})
    primary = boot("r1", store, 0)
    lease(primary, v1, 0)
    _, proposed = write(primary, [Buy("first", 1, 1)], now_ms=1)  # its Appends are lost
    assert proposed is not None
    assert store.open is not None
    sent = appends(lease(primary, v2, 200), "r2")
    apply(primary, primary.core.on_append_failed("r2", 300))
    for now_ms in range(310, 500, 10):
        sent += appends(apply(primary, primary.core.tick(now_ms)), "r2")
        assert all(message.epoch <= store.epoch for message in sent), (sent, store.epoch)
    store.open = None  # kill -9: the open batch is gone
    restarted = boot("r1", store, 1)
    lease(restarted, v2, 600)
    used = {message.epoch for message in sent}
    assert restarted.core.role != "primary" or restarted.core.epoch not in used


def test_backup_that_refused_a_commit_notice_is_told_again() -> None:
    """A backup learns a new view (same primary) before the primary does and refuses the
    primary's commit notice as `stale_epoch`: the notice must be sent again, or the idle
    backup keeps a committed entry unapplied (its reads then depend on the primary)."""
    v1 = initial_view("catalog", MEMBERS[:2])
    v2 = next_view(v1)  # the same roles, a new epoch (re-issued)
    primary_store, backup_store = SimStore(initial={1: 10}), SimStore(initial={1: 10})
    primary, backup = boot("r1", primary_store, 0), boot("r2", backup_store, 0)
    lease(primary, v1, 0)
    lease(backup, v1, 0)
    _, proposed = write(primary, [Buy("k", 1, 1)], now_ms=1)
    assert proposed is not None
    [message] = appends(proposed, "r2")
    reply = apply(backup, backup.core.on_append(message, 2), reply_to="r1").reply
    assert reply is not None
    apply(primary, primary.core.on_append_reply("r2", message, reply, 3))
    assert primary_store.commit_seq == 1
    lease(backup, v2, 150)  # the backup hears of epoch 2 first
    pending = appends(apply(primary, primary.core.tick(160)), "r2")
    for now_ms in range(170, 1000, 10):
        for message in pending:
            reply = apply(backup, backup.core.on_append(message, now_ms), reply_to="r1").reply
            assert reply is not None
            apply(primary, primary.core.on_append_reply("r2", message, reply, now_ms))
        pending = []
        if now_ms == 400:  # the primary hears of epoch 2
            pending = appends(grant(primary, v2, now_ms), "r2")
        pending += appends(apply(primary, primary.core.tick(now_ms)), "r2")
    assert backup_store.commit_seq == 1
