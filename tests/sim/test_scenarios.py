"""Hand-driven scenarios over the replica core and the simulator's store, for interleavings
too rare to trust to random seeds. Each drives `replication/replica.py` exactly as `runtime.py`
does (persist the Ready into `SimStore`, which keeps SQLite's transaction rules, then
`advance`), and delivers the messages it chooses, in the order it chooses.
"""

from __future__ import annotations

from bazar.frontend.views import initial_view, next_view
from bazar.replication.ready import AbortBatch, CommitBatch, PruneLog, Ready, SaveEpoch, Stage
from bazar.replication.replica import Replica, Timing
from bazar.testing.sim_store import Buy, SimStore
from bazar.wire import Append, Member, View

MEMBERS = tuple(Member(name=name, url=name) for name in ("r1", "r2", "r3"))
TIMING = Timing(lease_ms=1000, lease_renew_ms=100)


def boot(name: str, store: SimStore, incarnation: int) -> Replica:
    """A process started from its store, as `ReplicaRuntime.__init__` does."""
    return Replica(
        name=name,
        tier="catalog",
        pid=incarnation,
        incarnation=f"{name}.{incarnation}",
        boot_epoch=store.epoch,
        epoch=store.epoch,
        commit_seq=store.commit_seq,
        commit_epoch=store.commit_epoch,
        log=store,
        timing=TIMING,
        staged={entry.seq: entry for entry in store.staged},
    )


def apply(core: Replica, store: SimStore, ready: Ready) -> Ready:
    for effect in ready.persist:
        if isinstance(effect, SaveEpoch):
            store.save_epoch(effect.epoch)
        elif isinstance(effect, Stage):
            store.stage(effect)
        elif isinstance(effect, CommitBatch):
            store.commit_batch(effect.entry)
        elif isinstance(effect, AbortBatch):
            store.abort_batch()
        else:
            assert isinstance(effect, PruneLog), effect
            store.prune(effect.below_seq)
    core.advance(ready)
    return ready


def lease(core: Replica, store: SimStore, view: View, now_ms: int) -> Ready:
    apply(core, store, core.tick(now_ms))
    assert core.lease_sent is not None
    return apply(
        core, store, core.on_lease_reply(core.lease_sent[0], {"catalog": view}, True, now_ms)
    )


def grant(core: Replica, store: SimStore, view: View, now_ms: int) -> Ready:
    """Answer the lease request in flight (it must be one)."""
    assert core.lease_sent is not None
    seq = core.lease_sent[0]
    return apply(core, store, core.on_lease_reply(seq, {"catalog": view}, True, now_ms))


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
    lease(primary, store, v1, 0)
    entry, _ = store.begin_batch([Buy("first", 1, 1)], (primary.epoch, primary.next_seq()))
    assert entry is not None
    apply(primary, store, primary.propose(entry, 1))  # its Appends are lost
    sent = appends(lease(primary, store, v2, 200), "r2")
    apply(primary, store, primary.on_append_failed("r2", 300))
    for now_ms in range(310, 500, 10):
        sent += appends(apply(primary, store, primary.tick(now_ms)), "r2")
        assert all(message.epoch <= store.epoch for message in sent), (sent, store.epoch)
    store.open = None  # kill -9: the open batch is gone
    restarted = boot("r1", store, 1)
    lease(restarted, store, v2, 600)
    used = {message.epoch for message in sent}
    assert restarted.role != "primary" or restarted.epoch not in used


def test_backup_that_refused_a_commit_notice_is_told_again() -> None:
    """A backup learns a new view (same primary) before the primary does and refuses the
    primary's commit notice as `stale_epoch`: the notice must be sent again, or the idle
    backup keeps a committed entry unapplied (its reads then depend on the primary)."""
    v1 = initial_view("catalog", MEMBERS[:2])
    v2 = next_view(v1)  # the same roles, a new epoch (re-issued)
    primary_store, backup_store = SimStore(initial={1: 10}), SimStore(initial={1: 10})
    primary, backup = boot("r1", primary_store, 0), boot("r2", backup_store, 0)
    lease(primary, primary_store, v1, 0)
    lease(backup, backup_store, v1, 0)
    entry, _ = primary_store.begin_batch([Buy("k", 1, 1)], (primary.epoch, primary.next_seq()))
    assert entry is not None
    [message] = appends(apply(primary, primary_store, primary.propose(entry, 1)), "r2")
    reply = apply(backup, backup_store, backup.on_append(message, 2)).reply
    assert reply is not None
    apply(primary, primary_store, primary.on_append_reply("r2", message, reply, 3))
    assert primary_store.commit_seq == 1
    lease(backup, backup_store, v2, 150)  # the backup hears of epoch 2 first
    pending = appends(apply(primary, primary_store, primary.tick(160)), "r2")
    for now_ms in range(170, 1000, 10):
        for message in pending:
            reply = apply(backup, backup_store, backup.on_append(message, now_ms)).reply
            assert reply is not None
            apply(primary, primary_store, primary.on_append_reply("r2", message, reply, now_ms))
        pending = []
        if now_ms == 400:  # the primary hears of epoch 2
            pending = appends(grant(primary, primary_store, v2, now_ms), "r2")
        pending += appends(apply(primary, primary_store, primary.tick(now_ms)), "r2")
    assert backup_store.commit_seq == 1
