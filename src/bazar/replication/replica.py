"""The replica side of primary/backup replication, as a step function without I/O.

`Replica` holds what one replica process knows (its log position, the views, its lease, the
batch in flight) and decides; every event is one method returning a `Ready`
(`replication/ready.py`); the caller persists, calls `advance`, then sends. Time comes in as
`now_ms` (the process's monotonic clock).

Rules:
1. The primary of epoch e orders writes as `(e, seq)`, seq contiguous from 1, one batch in
   flight. It keeps the batch's transaction open until every backup of its view has staged
   the entry (and, on the catalog, the front end has taken the invalidation), so everything
   in a primary's tables is committed: its `commit_seq == last_seq`.
2. A backup stages entries (log only) and applies them once the primary's commit point
   covers them. Staged entries are the only ones that can ever be discarded.
3. Fencing: nothing from an epoch older than the replica's own is accepted; a primary takes
   no Append of its own epoch or older.
4. A process never acts as primary in an epoch it may have used before: it must see a view
   whose epoch is above `boot_epoch` (raised on boot and whenever a batch is abandoned).
5. Two entries with the same seq and epoch are the same entry (one primary per epoch); a
   staged entry that differs from the primary's is from an older epoch, uncommitted, and is
   dropped.
6. Leases: a replica serves reads and commits writes only until `lease_until_ms`, which is
   measured from when it SENT the lease request that the front end answered. The front end
   drops a replica from a view only after that lease has expired, so a deposed primary never
   acts beside a new one.
7. A new primary first replicates its staged suffix to the view's backups and applies it
   (it may have been committed by the old primary), then takes writes.
8. A catching-up member (in the view's members, neither primary nor backup) is sent the
   committed log; once it holds all of it and no batch is in flight, the primary names it in
   its next lease request (`join`) and commits nothing until the answer says whether the
   front end added it: so a backup joins holding every committed entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bazar.replication.ready import (
    FRONTEND,
    AbortBatch,
    CommitBatch,
    InstallSnapshot,
    PruneLog,
    Ready,
    SaveEpoch,
    Send,
    SnapshotWanted,
    Stage,
)
from bazar.wire import (
    Append,
    AppendReply,
    Change,
    Entry,
    Invalidate,
    LeaseRequest,
    ReplicaStatus,
    Role,
    Snapshot,
    Upsert,
    View,
)

RowKey = tuple[str, int | str]
Notify = Callable[[Sequence[Entry]], Invalidate | None]
WriteRefusal = Literal["not_primary", "no_lease", "min_in_sync"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """The core's answer when a request may not be served now (the driver turns it into
    an error for the caller): retryable elsewhere or later, never a bug."""

    reason: str


@dataclass(frozen=True, slots=True)
class ReadCheck:
    """A read on a backup touches a row that a staged entry writes (CRAQ): ask `view`'s
    primary for its commit point, then `Replica.read_checked` says which entries apply."""

    view: View
    staged: tuple[Entry, ...]
    truncations: int


def contiguous(entries: Sequence[Entry], first_seq: int) -> bool:
    """The entries are seqs `first_seq`, `first_seq + 1`, ... with epochs that never
    decrease along the log (a later primary has a higher epoch)."""
    seqs = [entry.seq for entry in entries]
    epochs = [entry.epoch for entry in entries]
    return seqs == list(range(first_seq, first_seq + len(seqs))) and epochs == sorted(epochs)


def change_key(change: Change, keys: Mapping[str, str]) -> RowKey:
    """The (table, key) a row image writes."""
    if isinstance(change, Upsert):
        return (change.table, change.row[keys[change.table]] or 0)
    return (change.table, change.key)


class Log(Protocol):
    """Read access to the committed log (the core never writes it)."""

    def read_log(self, first_seq: int, last_seq: int | None, limit: int = ...) -> list[Entry]: ...

    def first_log_seq(self) -> int:
        """The oldest entry not pruned (the next seq when the log is empty)."""
        ...


@dataclass(frozen=True, slots=True)
class Timing:
    """The replica's clocks and bounds, from `config.Limits`."""

    lease_ms: int = 1000
    lease_renew_ms: int = 100
    retry_ms: int = 50
    commit_notice_ms: int = 2
    catch_up_entries_max: int = 64
    invalidate_retry_ms_max: int = 1000
    min_in_sync: int = 1
    log_entries_max: int = 10_000
    join_hold_ms: int = 200
    join_hold_backoff_ms: int = 1000

    def __post_init__(self) -> None:
        assert 0 < self.lease_renew_ms < self.lease_ms
        assert self.log_entries_max >= 1
        assert self.catch_up_entries_max >= 1
        assert self.min_in_sync >= 1


@dataclass(slots=True)
class Peer:
    """What a primary knows of another replica of its tier."""

    match_seq: int
    confirmed: bool = False  # it answered ok: its log agrees with ours up to match_seq
    busy: bool = False  # one Append in flight to a peer at a time, so replies come in order
    retry_at_ms: int = 0
    sent_commit_seq: int = 0


@dataclass(slots=True)
class Inflight:
    """The entries a primary waits to commit: one batch, or the staged suffix it promotes."""

    kind: Literal["batch", "promotion"]
    entries: tuple[Entry, ...]
    invalidate: Invalidate | None
    acked: set[str] = field(default_factory=set)
    invalidated: bool = False
    invalidate_busy: bool = False
    invalidate_retry_at_ms: int = 0
    invalidate_backoff_ms: int = 0

    @property
    def last_seq(self) -> int:
        return self.entries[-1].seq


@dataclass(slots=True)
class Replica:
    """State of one replica process; see the module rules."""

    name: str
    tier: str
    pid: int
    incarnation: str
    boot_epoch: int
    epoch: int
    commit_seq: int
    commit_epoch: int
    log: Log
    timing: Timing = field(default_factory=Timing)
    notify: Notify | None = None
    staged: dict[int, Entry] = field(default_factory=dict)
    view: View | None = None
    views: dict[str, View] = field(default_factory=dict)
    lease_until_ms: int = -1
    lease_seq: int = 0
    lease_sent: tuple[int, int] | None = None  # (seq, sent_ms) of the request in flight
    lease_next_ms: int = 0
    joining_seq: int | None = None
    inflight: Inflight | None = None
    peers: dict[str, Peer] = field(default_factory=dict)
    notice_at_ms: int | None = None
    primary_since_epoch: int = 0  # the epoch of the view that last made us primary
    prune_at_seq: int = 0
    join_hold_until_ms: int | None = None  # new batches wait, so that a peer can join
    join_hold_next_ms: int = 0
    join_asked: bool = False
    truncations: int = 0

    def __post_init__(self) -> None:
        assert self.epoch >= self.boot_epoch
        assert self.commit_seq >= 0
        assert self.commit_epoch <= self.epoch
        assert all(seq > self.commit_seq for seq in self.staged)
        staged = [self.staged[seq] for seq in sorted(self.staged)]
        assert contiguous(staged, self.commit_seq + 1)
        assert all(entry.epoch >= self.commit_epoch for entry in staged)

    # ---------------------------------------------------------------- log position

    @property
    def last_seq(self) -> int:
        return max(self.staged, default=self.commit_seq)

    @property
    def last_epoch(self) -> int:
        return self.staged[self.last_seq].epoch if self.staged else self.commit_epoch

    def epoch_at(self, seq: int) -> int | None:
        """Epoch of our entry at seq if staged; None if committed or absent."""
        entry = self.staged.get(seq)
        return entry.epoch if entry is not None else None

    # ---------------------------------------------------------------- roles and leases

    @property
    def role(self) -> Role:
        view = self.view
        if view is None or view.epoch != self.epoch:
            return "none"
        if view.primary == self.name:
            return "primary" if view.epoch > self.boot_epoch else "none"
        return "backup" if self.name in view.backups else "none"

    def leased(self, now_ms: int) -> bool:
        return now_ms < self.lease_until_ms

    @property
    def promoting(self) -> bool:
        return self.inflight is not None and self.inflight.kind == "promotion"

    def serving(self, now_ms: int) -> bool:
        """May this replica answer reads now (rule 6)? A promoting primary may not: its
        staged suffix is neither applied nor known committed."""
        return self.role != "none" and self.leased(now_ms) and not self.promoting

    def enough_in_sync(self) -> bool:
        """`--min-in-sync`: at least that many copies (the primary and its backups)."""
        view = self.view
        return view is not None and 1 + len(view.backups) >= self.timing.min_in_sync

    def write_refusal(self, now_ms: int) -> WriteRefusal | None:
        """May a write be queued now? Each refusal is definite: nothing was queued, so
        nothing can run later on its own."""
        if self.role != "primary":
            return "not_primary"
        if not self.leased(now_ms):
            return "no_lease"
        if not self.enough_in_sync():
            return "min_in_sync"
        return None

    def queue_refusal(self) -> Refusal | None:
        """Writes queued for the next batch are refused once we are not the primary (they
        were never executed: a definite refusal)."""
        if self.role == "primary":
            return None
        return Refusal(f"{self.name} is not the primary")

    def read_refusal(self, now_ms: int) -> Refusal | None:
        if self.serving(now_ms):
            return None
        return Refusal(f"{self.name} is not serving reads")

    def commit_point_refusal(self) -> Refusal | None:
        """May we answer a backup's commit query (`GET /internal/commit`)? Only as the
        primary of our view, promotion done: while promoting, the staged suffix may have
        been committed (and acknowledged) by the old primary; before the view makes us
        primary again after a restart, so may entries that an OS crash took from our tables
        (staged again from the intent log). Either way our commit point would tell a backup
        to answer with the value from before them."""
        if self.promoting or (self.role == "primary" and self.staged):
            # (`staged` empties only once the promotion's Stage is on disk: until then the
            # database's commit point is below entries the old primary committed.)
            return Refusal(f"{self.name} is promoting its staged entries; retry")
        if self.role != "primary":
            return Refusal(f"{self.name} is not the primary of its view; retry")
        return None

    def read_check(
        self, keys: Mapping[str, str], table: str, wanted: set[int | str] | None
    ) -> ReadCheck | Refusal | None:
        """A read of `wanted` keys of `table` (any key when None) has read its rows: None
        when no staged entry writes them (the rows are committed), else the check to make
        with the primary (CRAQ), or a refusal (a promoting primary, no view yet)."""
        dirty = self.dirty(keys, table)
        if not dirty or (wanted is not None and not (dirty & wanted)):
            return None
        if self.role == "primary":
            return Refusal("the primary is promoting its staged entries; retry")
        view = self.views.get(self.tier)
        if view is None:
            return Refusal(f"no view of the {self.tier} tier yet")
        # Taken now: the caller read its rows before, and the entries may be applied (and
        # leave `staged`) while it waits for the primary.
        staged = tuple(self.committed_overlay(self.last_seq))
        assert staged, "a dirty key comes from a staged entry"
        return ReadCheck(view=view, staged=staged, truncations=self.truncations)

    def read_checked(self, check: ReadCheck, primary_commit_seq: int) -> list[Entry] | Refusal:
        """The staged entries of `check` that the primary has committed."""
        assert self.truncations >= check.truncations
        if self.truncations != check.truncations:
            # A newer primary replaced staged entries while we waited: the snapshot may
            # hold one that will never commit. Let the front end ask another replica.
            return Refusal("the log changed during the read; retry")
        return [entry for entry in check.staged if entry.seq <= primary_commit_seq]

    def can_propose(self, now_ms: int) -> bool:
        return (
            self.role == "primary"
            and self.inflight is None
            and self.joining_seq is None
            and (self.join_hold_until_ms is None or now_ms >= self.join_hold_until_ms)
            and not self.staged
            and self.leased(now_ms)
            and self.enough_in_sync()
        )

    def status(self) -> ReplicaStatus:
        inflight = self.inflight
        return ReplicaStatus(
            name=self.name,
            tier=self.tier,
            pid=self.pid,
            incarnation=self.incarnation,
            epoch=self.epoch,
            boot_epoch=self.boot_epoch,
            role=self.role,
            promoting=self.promoting,
            last_seq=self.last_seq,
            last_epoch=self.last_epoch,
            commit_seq=self.commit_seq,
            invalidating=None if inflight is None else inflight.invalidate,
        )

    # ---------------------------------------------------------------- events: time, leases

    def tick(self, now_ms: int) -> Ready:
        ready = Ready()
        self._drive(now_ms, ready)
        self._prune(ready)
        return ready

    def _prune(self, ready: Ready) -> None:
        """Keep at most about `log_entries_max` committed entries (checked every quarter of
        it); a peer that needs older ones gets a snapshot. Never during a batch: its open
        transaction would take the prune with it."""
        if self.commit_seq < self.prune_at_seq or self.inflight is not None:
            return
        entries_max = self.timing.log_entries_max
        self.prune_at_seq = self.commit_seq + max(1, entries_max // 4)
        below_seq = self.commit_seq - entries_max + 1
        if below_seq > self.log.first_log_seq():
            assert below_seq <= self.commit_seq, "the last committed entry is always kept"
            assert all(seq >= below_seq for seq in self.staged), "never a staged entry"
            ready.persist.append(PruneLog(below_seq))

    def on_lease_reply(self, seq: int, views: dict[str, View], granted: bool, now_ms: int) -> Ready:
        """The front end answered lease request `seq`: extend the lease from when we sent
        it, and adopt the views (persisting a newer epoch first)."""
        assert 1 <= seq <= self.lease_seq
        ready = Ready()
        sent = self.lease_sent
        if sent is None or sent[0] != seq:
            return ready  # an answer to a request we gave up on: it grants nothing
        self.lease_sent = None
        self.lease_next_ms = sent[1] + self.timing.lease_renew_ms
        if not granted:
            return ready
        assert sent[1] <= now_ms, "a lease is measured from when its request was sent"
        self.lease_until_ms = max(self.lease_until_ms, sent[1] + self.timing.lease_ms)
        if self.joining_seq is not None and seq >= self.joining_seq:
            self.joining_seq = None  # the views below say whether they joined
        self.views = dict(views)
        view = views.get(self.tier)
        if view is not None:
            self._adopt(view, ready)
        self._drive(now_ms, ready)
        return ready

    def on_lease_failed(self, seq: int, now_ms: int) -> Ready:
        assert 1 <= seq <= self.lease_seq
        ready = Ready()
        if self.lease_sent is not None and self.lease_sent[0] == seq:
            self.lease_sent = None
            self.lease_next_ms = now_ms + self.timing.retry_ms
        self._drive(now_ms, ready)
        return ready

    def _adopt(self, view: View, ready: Ready) -> None:
        assert view.tier == self.tier
        assert view.epoch >= 1
        assert view.primary not in view.backups
        if view.epoch < self.epoch:
            return  # we have seen a newer epoch (from a primary's Append)
        before = self.role
        newer = view.epoch > self.epoch
        if not newer and self.view is not None and self.view.epoch == view.epoch:
            assert self.view.primary == view.primary, "one primary per epoch"
        self.epoch = view.epoch
        self.view = view
        if newer and self.inflight is not None and self.inflight.kind == "batch":
            # Even if we stay primary (a backup was dropped): inside the batch's open
            # transaction the new epoch's record would be lost with a crash after we had
            # sent Appends of that epoch, and a restart would act in it a second time (a late
            # Append of the dead process could then replace the new one's entries). Roll
            # the batch back first; as after any abandoned batch, our epoch is re-issued.
            self._abandon("a new epoch while the batch is open", ready)
        after = self.role
        if after != "primary":
            # First: a rollback of the open batch must not undo the new epoch's record.
            self._abandon("not the primary of the current view", ready)
        assert self.epoch == view.epoch
        assert after != "primary" or self.epoch > self.boot_epoch  # core rule 4
        if newer and SaveEpoch(view.epoch) not in ready.persist:
            ready.persist.append(SaveEpoch(view.epoch))
        if before != after or newer:
            ready.transitions.append(
                f"transition=view tier={self.tier} node={self.name} epoch={view.epoch} role={after}"
            )
        if after != "primary":
            return
        if before != "primary":
            self.peers = {}
            self.primary_since_epoch = view.epoch
            self.notice_at_ms = 0  # backups may lag our commit point: tell them now
            if self.staged:
                self._start_promotion(ready)
        self._known_peers(view)
        if newer:
            self.notice_at_ms = 0  # a backup that just joined may lag our commit point

    def _known_peers(self, view: View) -> None:
        names = {member.name for member in view.members} - {self.name}
        for name in names - set(self.peers):
            self.peers[name] = Peer(match_seq=self.commit_seq)
        for name in set(self.peers) - names:
            del self.peers[name]
        assert self.name not in self.peers
        assert set(self.peers) == names

    def _start_promotion(self, ready: Ready) -> None:
        """Rule 7: our staged suffix may have been committed by the old primary."""
        assert self.inflight is None
        entries = tuple(self.staged[seq] for seq in sorted(self.staged))
        assert entries
        assert contiguous(entries, self.commit_seq + 1)
        notify = self.notify(entries) if self.notify is not None else None
        self.inflight = Inflight(kind="promotion", entries=entries, invalidate=notify)
        ready.transitions.append(
            f"transition=promotion tier={self.tier} node={self.name} epoch={self.epoch} "
            f"from_seq={entries[0].seq} to_seq={entries[-1].seq}"
        )

    def _abandon(self, reason: str, ready: Ready) -> None:
        """Stop waiting for the entries in flight; a batch is rolled back, and this process
        never reuses its (epoch, seq) (rule 4). A promotion leaves its entries staged."""
        inflight = self.inflight
        if inflight is None:
            return
        self.inflight = None
        self.boot_epoch = max(self.boot_epoch, self.epoch)
        assert self.role != "primary", "never primary again in an epoch it acted in"
        if inflight.kind == "batch":
            ready.persist_once(AbortBatch(reason))
            if self.epoch > inflight.entries[0].epoch:
                # The rollback undoes a newer epoch's record written inside the batch.
                ready.persist.append(SaveEpoch(self.epoch))
        ready.transitions.append(
            f"transition=step_down tier={self.tier} node={self.name} epoch={self.epoch} "
            f"seq={inflight.last_seq} reason={reason.replace(' ', '_')}"
        )

    # ---------------------------------------------------------------- events: primary

    def propose(self, entry: Entry, now_ms: int) -> Ready:
        """The driver executed a batch in an open transaction and logged `entry`. If the
        lease ran out (or a join hold began) while it executed, a pause or a stall, the
        batch was never sent: it is rolled back, a definite refusal."""
        assert self.role == "primary"
        assert self.inflight is None
        assert not self.staged
        assert entry.seq == self.commit_seq + 1
        assert entry.epoch == self.epoch
        ready = Ready()
        if not self.can_propose(now_ms):
            ready.persist.append(AbortBatch("the lease ran out; not executed", definite=True))
            return ready
        notify = self.notify((entry,)) if self.notify is not None else None
        self.inflight = Inflight(kind="batch", entries=(entry,), invalidate=notify)
        self.notice_at_ms = None  # the Append carries the commit point
        self._drive(now_ms, ready)
        assert self.inflight is None or self.inflight.entries == (entry,)
        return ready

    def next_seq(self) -> int:
        assert self.role == "primary"
        assert not self.staged
        return self.commit_seq + 1

    def on_append_reply(
        self, peer_name: str, sent: Append, reply: AppendReply, now_ms: int
    ) -> Ready:
        assert sent.primary == self.name
        assert sent.epoch <= self.epoch
        ready = Ready()
        peer = self.peers.get(peer_name)
        if peer is None:
            return ready
        peer.busy = False
        if reply.status != "gap":  # (a gap is sent the missing entries with the next write)
            # Its reply says what it applied: a refused Append (stale_epoch) did not tell it
            # our commit point, so a notice is owed again.
            peer.sent_commit_seq = min(peer.sent_commit_seq, reply.commit_seq)
            if peer.sent_commit_seq < self.commit_seq and self.notice_at_ms is None:
                self.notice_at_ms = now_ms
        if sent.epoch < self.primary_since_epoch:
            # Sent in an earlier stint as primary: our log may differ from what it carried.
            peer.retry_at_ms = now_ms + self.timing.retry_ms
        elif reply.status == "stale_epoch" or reply.epoch > self.epoch:
            # The peer knows a newer epoch: ask the front end now rather than at renewal.
            peer.retry_at_ms = now_ms + self.timing.retry_ms
            self.lease_next_ms = min(self.lease_next_ms, now_ms)
        elif reply.status == "ok":
            sent_to = sent.prev_seq + len(sent.entries)
            # (After an abandoned batch we are no longer primary: `peers` is reset before
            # we are again, so what it says meanwhile is never used.)
            assert self.role != "primary" or sent_to <= self._log_end(), "we sent only ours"
            peer.match_seq = sent_to
            peer.confirmed = True
            inflight = self.inflight
            if inflight is not None and sent.entries and sent_to >= inflight.last_seq:
                inflight.acked.add(peer_name)
        else:
            peer.match_seq = min(reply.last_seq, self._log_end())
            peer.confirmed = False
        assert self.role != "primary" or 0 <= peer.match_seq <= self._log_end()
        self._drive(now_ms, ready)
        return ready

    def on_snapshot_reply(
        self, peer_name: str, sent: Snapshot, reply: AppendReply, now_ms: int
    ) -> Ready:
        """The peer installed our snapshot (or already held all it holds)."""
        assert sent.primary == self.name
        assert sent.commit_seq <= self.commit_seq, "a snapshot holds only what we committed"
        ready = Ready()
        peer = self.peers.get(peer_name)
        if peer is None:
            return ready
        peer.busy = False
        if sent.epoch < self.primary_since_epoch or reply.status != "ok":
            peer.retry_at_ms = now_ms + self.timing.retry_ms
            if reply.status == "stale_epoch" or reply.epoch > self.epoch:
                self.lease_next_ms = min(self.lease_next_ms, now_ms)
        else:
            peer.match_seq = sent.commit_seq
            peer.confirmed = True
        self._drive(now_ms, ready)
        return ready

    def on_append_failed(self, peer_name: str, now_ms: int) -> Ready:
        ready = Ready()
        peer = self.peers.get(peer_name)
        if peer is not None:
            peer.busy = False
            peer.retry_at_ms = now_ms + self.timing.retry_ms
            # The commit point it carried may be lost: send it again when the retry is due,
            # or an idle backup keeps a committed entry unapplied until the next write.
            peer.sent_commit_seq = 0
            if self.notice_at_ms is None or self.notice_at_ms > peer.retry_at_ms:
                self.notice_at_ms = peer.retry_at_ms
        self._drive(now_ms, ready)
        return ready

    def on_invalidate_reply(self, now_ms: int) -> Ready:
        ready = Ready()
        inflight = self.inflight
        if inflight is not None and inflight.invalidate_busy:
            inflight.invalidate_busy = False
            inflight.invalidated = True
        self._drive(now_ms, ready)
        return ready

    def on_invalidate_failed(self, now_ms: int) -> Ready:
        ready = Ready()
        inflight = self.inflight
        if inflight is not None and inflight.invalidate_busy:
            inflight.invalidate_busy = False
            backoff = min(
                max(2 * inflight.invalidate_backoff_ms, self.timing.retry_ms),
                self.timing.invalidate_retry_ms_max,
            )
            inflight.invalidate_backoff_ms = backoff
            inflight.invalidate_retry_at_ms = now_ms + backoff
        self._drive(now_ms, ready)
        return ready

    def _log_end(self) -> int:
        inflight = self.inflight
        return inflight.last_seq if inflight is not None else self.commit_seq

    # ---------------------------------------------------------------- the primary's driver

    def _drive(self, now_ms: int, ready: Ready) -> None:
        """After every event: renew the lease, send what is due, commit what can be."""
        view = self.view
        if self.role == "primary" and view is not None:
            self._hold_for_join(view, now_ms)
        self._renew_lease(now_ms, ready)
        if self.role != "primary" or view is None:
            return
        inflight = self.inflight
        assert inflight is None or inflight.entries[0].seq == self.commit_seq + 1
        assert inflight is None or contiguous(inflight.entries, self.commit_seq + 1)
        notice_due = self.notice_at_ms is not None and self.notice_at_ms <= now_ms
        for name, peer in sorted(self.peers.items()):
            if peer.busy or peer.retry_at_ms > now_ms:
                continue
            if name not in view.backups:  # catching up (rule 8): the committed log only
                if not peer.confirmed or peer.match_seq < self.commit_seq:
                    self._send_entries(name, peer, self.commit_seq, ready)
            elif inflight is not None:
                if name not in inflight.acked:
                    self._send_entries(name, peer, inflight.last_seq, ready)
            elif notice_due and peer.sent_commit_seq < self.commit_seq:
                self._send_entries(name, peer, self.commit_seq, ready)  # idle commit notice
        owed = [n for n in view.backups if self.peers[n].sent_commit_seq < self.commit_seq]
        if notice_due and not owed:
            self.notice_at_ms = None
        if inflight is not None:
            self._send_invalidate(inflight, now_ms, ready)
            self._maybe_commit(inflight, now_ms, ready)

    def _send_entries(self, name: str, peer: Peer, upto_seq: int, ready: Ready) -> None:
        """Send `name` our log from its match point, up to `upto_seq` (bounded); a snapshot
        if we have pruned the entries it needs."""
        first = peer.match_seq + 1
        kept = self.log.first_log_seq()
        # Pruned: the entries it needs, or the one before them (the Append's prev_epoch).
        if first <= self.commit_seq and (first < kept or 0 < peer.match_seq < kept):
            if self.staged:
                return  # promoting: our database (the snapshot) holds the staged suffix too
            peer.busy = True
            ready.send.append(Send(to=name, message=SnapshotWanted(self.epoch, self.name)))
            return
        last = min(upto_seq, peer.match_seq + self.timing.catch_up_entries_max)
        assert last <= self._log_end()
        entries = self._entries(first, last)
        prev_epoch = self._epoch_of(peer.match_seq)
        assert all(entry.epoch >= prev_epoch for entry in entries)
        message = Append(
            epoch=self.epoch,
            primary=self.name,
            prev_seq=peer.match_seq,
            prev_epoch=prev_epoch,
            entries=entries,
            commit_seq=self.commit_seq,
        )
        peer.busy = True
        peer.sent_commit_seq = self.commit_seq
        ready.send.append(Send(to=name, message=message))

    def _entries(self, first: int, last: int) -> list[Entry]:
        if first > last:
            return []
        inflight = self.inflight
        pending = {e.seq: e for e in inflight.entries} if inflight is not None else {}
        committed_last = min(last, self.commit_seq)
        entries = self.log.read_log(first, committed_last) if first <= committed_last else []
        entries += [pending[seq] for seq in range(max(first, committed_last + 1), last + 1)]
        assert [e.seq for e in entries] == list(range(first, last + 1)), (first, last)
        return entries

    def _epoch_of(self, seq: int) -> int:
        if seq == 0:
            return 0
        if seq == self.commit_seq:
            return self.commit_epoch
        inflight = self.inflight
        for entry in inflight.entries if inflight is not None else ():
            if entry.seq == seq:
                return entry.epoch
        found = self.log.read_log(seq, seq)
        assert found, seq
        return found[0].epoch

    def _send_invalidate(self, inflight: Inflight, now_ms: int, ready: Ready) -> None:
        if inflight.invalidate is None or inflight.invalidated or inflight.invalidate_busy:
            return
        if inflight.invalidate_retry_at_ms > now_ms:
            return
        inflight.invalidate_busy = True
        ready.send.append(Send(to=FRONTEND, message=inflight.invalidate))

    def _maybe_commit(self, inflight: Inflight, now_ms: int, ready: Ready) -> None:
        view = self.view
        assert view is not None
        if not set(view.backups) <= inflight.acked:
            return
        if inflight.invalidate is not None and not inflight.invalidated:
            return
        if not self.leased(now_ms):
            return  # rule 6: wait for the lease (or for the view that deposes us)
        if inflight.kind == "batch" and not self.enough_in_sync():
            # A backup was dropped while the batch waited: `--min-in-sync` forbids
            # acknowledging it on fewer copies (the view manager then re-issues our epoch).
            self._abandon("fewer replicas in sync than min_in_sync", ready)
            return
        assert self.leased(now_ms), "rule 6: nothing commits without a lease"
        assert set(view.backups) <= inflight.acked, "rule 1: every backup staged it"
        self.inflight = None
        self.notice_at_ms = now_ms + self.timing.commit_notice_ms
        last = inflight.entries[-1]
        if inflight.kind == "batch":
            assert last.seq == self.commit_seq + 1
            ready.persist_once(CommitBatch(last))
            self.commit_seq = last.seq
            self.commit_epoch = last.epoch
            return
        ready.persist_once(
            Stage(
                epoch=self.epoch,
                truncate_from=None,
                stage=(),
                apply=inflight.entries,
                commit_seq=last.seq,
            )
        )
        ready.transitions.append(
            f"transition=promoted tier={self.tier} node={self.name} epoch={self.epoch} "
            f"commit_seq={last.seq}"
        )

    def _renew_lease(self, now_ms: int, ready: Ready) -> None:
        if self.lease_sent is not None or now_ms < self.lease_next_ms:
            return
        join = self._joiners()
        assert not join or self.inflight is None, "rule 8: a joiner holds all we committed"
        self.lease_seq += 1
        self.lease_sent = (self.lease_seq, now_ms)
        if join:
            self.joining_seq = self.lease_seq
        message = LeaseRequest(status=self.status(), seq=self.lease_seq, join=join)
        ready.send.append(Send(to=FRONTEND, message=message))

    def _hold_for_join(self, view: View, now_ms: int) -> None:
        """Rule 8 under load: a batch is always in flight, so a catching-up peer close to
        our commit point would never find the moment to join. Hold new batches for up to
        `join_hold_ms` (then not again for `join_hold_backoff_ms`, should the peer stall),
        and ask the front end at once, once per hold, when it holds all we committed."""
        if self.joining_seq is not None:
            return  # the join request itself holds new batches until its answer
        reach = self.commit_seq - self.timing.catch_up_entries_max
        close = any(
            peer.confirmed and peer.match_seq >= reach
            for name, peer in self.peers.items()
            if name not in view.backups
        )
        hold = self.join_hold_until_ms
        if hold is None:
            if close and now_ms >= self.join_hold_next_ms:
                self.join_hold_until_ms = now_ms + self.timing.join_hold_ms
                self.join_asked = False
            return
        if not close or now_ms >= hold:
            self.join_hold_until_ms = None
            if close:  # it did not make it in time: let writes through for a while
                self.join_hold_next_ms = now_ms + self.timing.join_hold_backoff_ms
            return
        if not self.join_asked and self._joiners():
            self.join_asked = True
            self.lease_next_ms = min(self.lease_next_ms, now_ms)

    def _joiners(self) -> tuple[str, ...]:
        """Rule 8: catching-up peers that hold our whole committed log, while nothing is in
        flight (and nothing will be until the answer)."""
        view = self.view
        if self.role != "primary" or view is None or self.inflight is not None:
            return ()
        if self.joining_seq is not None:
            return ()
        return tuple(
            name
            for name, peer in sorted(self.peers.items())
            if name not in view.backups
            and not peer.busy
            and peer.confirmed
            and peer.match_seq == self.commit_seq
        )

    # ---------------------------------------------------------------- events: backup

    def on_append(self, message: Append, now_ms: int) -> Ready:
        """Decide what to do with an Append (rules 2, 3, 5); the reply is in the Ready."""
        ready = Ready()
        if message.epoch < self.epoch or (message.epoch == self.epoch and self.role == "primary"):
            ready.reply = self._reply("stale_epoch", self.epoch)
            return ready
        if self.inflight is not None or self.role == "primary":
            self._abandon("a newer primary appends", ready)
            self.boot_epoch = max(self.boot_epoch, self.epoch)
        if message.epoch == self.epoch and self.view is not None and self.view.epoch == self.epoch:
            assert message.primary == self.view.primary, "one primary per epoch"
        plan, reply = self.plan_append(message)
        assert plan.commit_seq >= self.commit_seq
        assert reply.last_seq >= plan.commit_seq
        if plan.writes or plan.epoch != self.epoch or plan.commit_seq != self.commit_seq:
            ready.persist.append(plan)
        ready.reply = reply
        return ready

    def on_snapshot(self, snapshot: Snapshot, now_ms: int) -> Ready:
        """A primary sends its committed database: we were too far behind its log. Fenced
        like an Append; it replaces everything, our staged suffix included (uncommitted)."""
        ready = Ready()
        if snapshot.epoch < self.epoch or (snapshot.epoch == self.epoch and self.role == "primary"):
            ready.reply = self._reply("stale_epoch", self.epoch)
            return ready
        if self.inflight is not None or self.role == "primary":
            self._abandon("a newer primary sends a snapshot", ready)
            self.boot_epoch = max(self.boot_epoch, self.epoch)
        epoch = max(self.epoch, snapshot.epoch)
        if snapshot.commit_seq > self.commit_seq:
            ready.persist.append(
                InstallSnapshot(
                    epoch=epoch,
                    commit_seq=snapshot.commit_seq,
                    commit_epoch=snapshot.commit_epoch,
                )
            )
            ready.transitions.append(
                f"transition=snapshot tier={self.tier} node={self.name} "
                f"commit_seq={snapshot.commit_seq}"
            )
        ready.reply = AppendReply(
            status="ok",
            epoch=epoch,
            last_seq=max(snapshot.commit_seq, self.commit_seq),
            commit_seq=max(snapshot.commit_seq, self.commit_seq),
        )
        return ready

    def plan_append(self, message: Append) -> tuple[Stage, AppendReply]:
        assert message.epoch >= self.epoch
        if message.prev_seq > self.last_seq:
            return self._plan(message, "gap", None, (), self.last_seq, applies=False)
        last = self.last_seq
        ours = self.epoch_at(message.prev_seq)
        if ours is not None and message.prev_epoch != ours:
            last = message.prev_seq - 1
            return self._plan(message, "gap", message.prev_seq, (), last, applies=False)
        truncate_from: int | None = None
        stage: list[Entry] = []
        for entry in message.entries:
            if entry.seq <= self.commit_seq:
                continue
            if entry.seq <= last:
                if self.epoch_at(entry.seq) == entry.epoch:
                    continue
                truncate_from = entry.seq if truncate_from is None else truncate_from
                last = entry.seq - 1
            assert entry.seq == last + 1
            stage.append(entry)
            last = entry.seq
        assert truncate_from is None or truncate_from > self.commit_seq, "never a committed one"
        assert not stage or contiguous(stage, stage[0].seq)
        return self._plan(message, "ok", truncate_from, tuple(stage), last, applies=True)

    def _plan(
        self,
        message: Append,
        status: Literal["ok", "gap"],
        truncate_from: int | None,
        stage: tuple[Entry, ...],
        last: int,
        *,
        applies: bool,
    ) -> tuple[Stage, AppendReply]:
        """Only an accepted Append moves the commit point: our entries up to `last` then
        agree with the primary's log."""
        commit_seq = self.commit_seq
        if applies:
            # Only entries up to the last one this Append carried are known to agree with
            # the primary's log: a staged entry beyond it may be from an older epoch.
            checked = message.prev_seq + len(message.entries)
            commit_seq = max(self.commit_seq, min(message.commit_seq, last, checked))
        candidates = {
            seq: e for seq, e in self.staged.items() if truncate_from is None or seq < truncate_from
        }
        candidates.update((entry.seq, entry) for entry in stage)
        apply = tuple(candidates[seq] for seq in sorted(candidates) if seq <= commit_seq)
        assert commit_seq <= last or not applies
        assert contiguous(apply, self.commit_seq + 1)
        assert self.commit_seq + len(apply) == commit_seq, "apply exactly up to commit_seq"
        reply = AppendReply(
            status=status, epoch=message.epoch, last_seq=last, commit_seq=commit_seq
        )
        plan = Stage(
            epoch=message.epoch,
            truncate_from=truncate_from,
            stage=stage,
            apply=apply,
            commit_seq=commit_seq,
        )
        return plan, reply

    def _reply(self, status: Literal["ok", "gap", "stale_epoch"], epoch: int) -> AppendReply:
        return AppendReply(
            status=status,
            epoch=max(epoch, self.epoch),
            last_seq=self.last_seq,
            commit_seq=self.commit_seq,
        )

    # ---------------------------------------------------------------- after persisting

    def advance(self, ready: Ready) -> None:
        """`ready.persist` is on disk: make memory agree (readers look at `staged`, so it
        changes only once the database has)."""
        for effect in ready.persist:
            if isinstance(effect, Stage):
                self._advance_stage(effect)
            elif isinstance(effect, InstallSnapshot):
                assert effect.commit_seq > self.commit_seq
                self.staged = {}
                self.commit_seq = effect.commit_seq
                self.commit_epoch = effect.commit_epoch
                self.epoch = max(self.epoch, effect.epoch)
                self.truncations += 1  # a read in flight may hold a replaced row

    def _advance_stage(self, plan: Stage) -> None:
        assert plan.epoch >= self.epoch
        assert plan.commit_seq >= self.commit_seq
        if plan.truncate_from is not None:
            assert plan.truncate_from > self.commit_seq
            for seq in [seq for seq in self.staged if seq >= plan.truncate_from]:
                del self.staged[seq]
            self.truncations += 1
        for entry in plan.stage:
            self.staged[entry.seq] = entry
        for entry in plan.apply:
            assert entry.seq == self.commit_seq + 1
            del self.staged[entry.seq]
            self.commit_seq = entry.seq
            self.commit_epoch = entry.epoch
        assert self.commit_seq == plan.commit_seq
        self.epoch = max(self.epoch, plan.epoch)
        assert all(seq > self.commit_seq for seq in self.staged)

    # ---------------------------------------------------------------- reads (CRAQ)

    def dirty(self, keys: Mapping[str, str], table: str) -> set[int | str]:
        """Keys of `table` that a staged entry writes: their committed value is unknown here."""
        found: set[int | str] = set()
        for entry in self.staged.values():
            for change in entry.changes:
                changed_table, key = change_key(change, keys)
                if changed_table == table:
                    found.add(key)
        return found

    def committed_overlay(self, primary_commit_seq: int) -> list[Entry]:
        """Staged entries that the primary reports committed, in order."""
        return [self.staged[seq] for seq in sorted(self.staged) if seq <= primary_commit_seq]
