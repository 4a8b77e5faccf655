"""The one driver of a replica core: how every `Ready` is applied, in the real process and in
the simulator alike (etcd-io/raft's `Ready` loop; TigerBeetle's simulator runs the production
replica, not a copy of it).

Why one place: the order in which a step's effects happen is itself the protocol (nothing is
sent, and no caller is answered, before what it depends on is durable). Written once, here,
it is what the simulator proves and what the process runs. The hosts around it, the asyncio
runtime (`runtime.py`) and the simulated process (`testing/sim_replica.py`), keep only what
differs between them: threads, sockets and timers, or the simulated network and clock.
Nothing here decides what the protocol does: the core (`replica.py`) does; the driver
applies it.

A step has three phases, always in this order, and a host runs one step at a time:
1. `decide(event)`: the core's step function, at the host's clock.
2. `persist(ready)`: every effect through the `Store` protocol, in order, each durable before
   the next (on the real process, on its writer thread: the event loop never waits for an
   fsync). A crash may land after this phase and before the next.
3. `complete(ready)`: `core.advance` (memory agrees with the disk only now), then the
   transitions, the batch's answers (its COMMIT is on disk), the sends and the reply.
A batch is a step too: `take_batch` (the core says whether one may start), `begin` (its
commands execute in an open transaction that logs one entry), `propose` (the core decides),
then `persist` and `complete`, and last the intent (`write_intent`), which overlaps the
backups' staging.

Controls (`Controls`): deliberate bugs for the simulator's checks to catch. Only the
simulator can set them: no command line, cluster file or environment variable reaches them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import msgspec

from bazar.errors import Abandoned, BazarError, NotPrimary, Refused, Unavailable
from bazar.replication.ready import (
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
from bazar.replication.replica import (
    Notify,
    ReadCheck,
    Refusal,
    Replica,
    Timing,
    WriteRefusal,
)
from bazar.wire import (
    Append,
    AppendReply,
    CommitPoint,
    Entry,
    Invalidate,
    InvalidateReply,
    LeaseReply,
    LeaseRequest,
    Snapshot,
    Version,
)

C = TypeVar("C")
R = TypeVar("R")
H = TypeVar("H")
H_in = TypeVar("H_in", contravariant=True)
C_in = TypeVar("C_in", contravariant=True)
R_in = TypeVar("R_in", contravariant=True)
R_out = TypeVar("R_out", covariant=True)


class Meta(msgspec.Struct, frozen=True, kw_only=True):
    """What a replica's store holds of its log at start-up."""

    epoch: int
    commit_seq: int
    commit_epoch: int
    staged: tuple[Entry, ...]


class Store(Protocol[C_in, R_out]):
    """A replica's durable state, as the driver uses it. Every method that writes is
    durable when it returns (an fsync), except `commit_batch` when `write_intent` holds
    its entry, and `begin_batch`, whose transaction stays open until `commit_batch` or
    `rollback_batch`. `storage.Store` implements it over SQLite, `testing/sim_store.py`
    in memory with the same durability rules."""

    @property
    def tables(self) -> Mapping[str, str]:
        """Replicated table name -> its key column."""
        ...

    def read_log(self, first_seq: int, last_seq: int | None, limit: int = ...) -> list[Entry]: ...

    def first_log_seq(self) -> int: ...

    def recover(self) -> None:
        """At start-up, before `load_meta`: put back what an OS crash took (`IntentLog`)."""
        ...

    def load_meta(self) -> Meta: ...

    def begin_batch(
        self, commands: Sequence[C_in], version: Version
    ) -> tuple[Entry | None, Sequence[R_out]]: ...

    def commit_batch(self, entry: Entry) -> None: ...

    def rollback_batch(self) -> None: ...

    def write_intent(self, entry: Entry) -> None: ...

    def save_epoch(self, epoch: int) -> None: ...

    def stage(self, plan: Stage) -> None: ...

    def prune(self, below_seq: int) -> None: ...

    def install_snapshot(self, data: bytes, epoch: int) -> None: ...

    def snapshot(self) -> tuple[bytes, int, int]:
        """The committed database: `(bytes, commit_seq, commit_epoch)`."""
        ...

    def commit_point(self) -> CommitPoint: ...


class Host(Protocol[H_in, R_in]):
    """What the driver asks of the process it runs in."""

    def now_ms(self) -> int: ...

    def transmit(self, send: Send) -> None:
        """Start `send`; its answer (or failure) comes back as `driver.answered`."""
        ...

    def settle(self, handle: H_in, result: R_in | None, error: BazarError | None) -> None:
        """Answer the caller of a queued write: its result, or the error."""
        ...

    def reply(self, handle: H_in, reply: AppendReply) -> None:
        """Answer the sender of an Append or a snapshot."""
        ...

    def log(self, line: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Controls:
    """Deliberate bugs, for the simulator's controls only (see the module docstring)."""

    reply_before_persist: bool = False
    """Answer and send before persisting (the sends of a step, its reply, its batch)."""
    read_without_check: bool = False
    """Serve reads without the core's check (role, lease, promotion)."""


SAFE = Controls()

Batch = list[tuple[C, H]]


def boot(
    store: Store[C, R],
    *,
    name: str,
    tier: str,
    pid: int,
    incarnation: str,
    timing: Timing,
    notify: Notify | None = None,
) -> Replica:
    """The one way a replica core starts: from what its store holds (after `recover`). Its
    boot epoch is the epoch on disk, so it never acts as primary in an epoch it may have
    used before (core rule 4)."""
    store.recover()
    meta = store.load_meta()
    assert meta.commit_seq >= 0
    assert all(entry.seq == meta.commit_seq + 1 + i for i, entry in enumerate(meta.staged))
    core = Replica(
        name=name,
        tier=tier,
        pid=pid,
        incarnation=incarnation,
        boot_epoch=meta.epoch,
        epoch=meta.epoch,
        commit_seq=meta.commit_seq,
        commit_epoch=meta.commit_epoch,
        log=store,
        timing=timing,
        notify=notify,
        staged={entry.seq: entry for entry in meta.staged},
    )
    assert core.last_seq == meta.commit_seq + len(meta.staged)
    return core


class Driver(Generic[C, R, H]):
    """Applies one replica core's steps through a `Store` and a `Host` (module docstring)."""

    def __init__(
        self,
        core: Replica,
        store: Store[C, R],
        host: Host[H, R],
        *,
        batch_commands_max: int,
        queued_max: int,
        controls: Controls = SAFE,
    ) -> None:
        assert batch_commands_max >= 1
        assert queued_max >= batch_commands_max
        self.core = core
        self.store = store
        self.host = host
        self.batch_commands_max = batch_commands_max
        self.queued_max = queued_max
        self.controls = controls
        self.queue: Batch[C, H] = []
        self.batch: tuple[Batch[C, H], Sequence[R], Entry] | None = None
        self.stepping = False  # between `decide` (or `take_batch`) and `complete`
        self.snapshot_data: bytes | None = None  # the bytes an InstallSnapshot will install

    # ---------------------------------------------------------------- steps

    def decide(self, event: Callable[[int], Ready], reply_to: H | None = None) -> Ready:
        """Phase 1: the core's step. The host then runs `persist` and `complete`."""
        assert not self.stepping, "one step at a time"
        self.stepping = True
        try:
            ready = event(self.host.now_ms())
        except BaseException:
            self.stepping = False  # (a bug the step asserted: the process must go on or exit)
            raise
        if self.controls.reply_before_persist:
            self._effects(ready, reply_to)
        return ready

    def persist(self, ready: Ready) -> None:
        """Phase 2: every effect, in order, each durable before the next."""
        assert self.stepping
        store = self.store
        open_batch = self.batch is not None  # (its transaction, until COMMIT or ROLLBACK)
        for effect in ready.persist:
            if isinstance(effect, SaveEpoch):
                store.save_epoch(effect.epoch)
            elif isinstance(effect, Stage):
                assert not open_batch, "a Stage inside a batch's transaction"
                store.stage(effect)
            elif isinstance(effect, CommitBatch):
                store.commit_batch(effect.entry)  # (the store checks its batch is open)
                open_batch = False
            elif isinstance(effect, PruneLog):
                # (A tick may commit the batch and prune in one step: after its COMMIT.)
                assert not open_batch, "a prune inside a batch would roll back with it"
                store.prune(effect.below_seq)
            elif isinstance(effect, InstallSnapshot):
                data, self.snapshot_data = self.snapshot_data, None
                assert data is not None, "a snapshot is installed only in its own step"
                store.install_snapshot(data, effect.epoch)
            else:
                assert isinstance(effect, AbortBatch)
                store.rollback_batch()
                open_batch = False

    def unwind(self, ready: Ready) -> bool:
        """`persist` raised (the world's error: the disk, or a malformed entry from a peer).
        True when the process must restart from its disk: a COMMIT or ROLLBACK of the batch
        failed, and whether it is on disk is unknown (the core has already moved past it;
        the boot epoch rule then forces a new epoch, so this (epoch, seq) is never written
        again). Otherwise the transaction rolled back, and the step is dropped."""
        assert self.stepping
        self.stepping = False
        self.snapshot_data = None
        return any(isinstance(effect, CommitBatch | AbortBatch) for effect in ready.persist)

    def complete(self, ready: Ready, reply_to: H | None = None) -> None:
        """Phase 3: memory agrees with the disk, then the world hears of it."""
        assert self.stepping
        core = self.core
        epoch, commit_seq = core.epoch, core.commit_seq
        core.advance(ready)
        assert core.epoch >= epoch  # positions never go backwards
        assert core.commit_seq >= commit_seq
        assert core.last_seq >= core.commit_seq
        if not self.controls.reply_before_persist:
            self._effects(ready, reply_to)
        self.stepping = False
        self.snapshot_data = None
        refusal = self.core.queue_refusal()
        if self.queue and refusal is not None:
            self.fail_queue(NotPrimary(refusal.reason))

    def _effects(self, ready: Ready, reply_to: H | None) -> None:
        host = self.host
        for line in ready.transitions:
            host.log(line)
        for effect in ready.persist:
            if isinstance(effect, CommitBatch):
                self._finish_batch(None)
            elif isinstance(effect, AbortBatch):
                error: BazarError = (
                    Refused(effect.reason)
                    if effect.definite
                    else Abandoned(f"the write was abandoned: {effect.reason}")
                )
                self._finish_batch(error)
        for send in ready.send:
            host.transmit(send)
        if reply_to is not None:
            assert ready.reply is not None
            host.reply(reply_to, ready.reply)

    # ---------------------------------------------------------------- answers to sends

    def answered(self, send: Send, answer: object | None) -> Callable[[int], Ready]:
        """The event that ends `send`: its reply (`answer`, of the type the message
        expects), or its failure (None, or anything else)."""
        core = self.core
        message = send.message
        if isinstance(message, LeaseRequest):
            if isinstance(answer, LeaseReply):
                return _bind(core.on_lease_reply, message.seq, answer.views, answer.granted)
            return _bind(core.on_lease_failed, message.seq)
        if isinstance(message, Invalidate):
            if isinstance(answer, InvalidateReply):
                return core.on_invalidate_reply
            return core.on_invalidate_failed
        assert isinstance(message, Append), "a snapshot ends in `snapshot_answered`"
        if isinstance(answer, AppendReply):
            return _bind(core.on_append_reply, send.to, message, answer)
        return _bind(core.on_append_failed, send.to)

    def snapshot_for(self, wanted: SnapshotWanted) -> tuple[Snapshot, bytes]:
        """The snapshot a `SnapshotWanted` send carries: our committed database now."""
        data, commit_seq, commit_epoch = self.store.snapshot()
        assert commit_seq <= self.core.commit_seq
        header = Snapshot(
            epoch=wanted.epoch,
            primary=wanted.primary,
            commit_seq=commit_seq,
            commit_epoch=commit_epoch,
        )
        return header, data

    def snapshot_answered(
        self, peer: str, header: Snapshot | None, answer: object | None
    ) -> Callable[[int], Ready]:
        """The event that ends a `SnapshotWanted` send (`header` None: it never left)."""
        if header is not None and isinstance(answer, AppendReply):
            return _bind(self.core.on_snapshot_reply, peer, header, answer)
        return _bind(self.core.on_append_failed, peer)

    def on_snapshot(self, header: Snapshot, data: bytes) -> Callable[[int], Ready]:
        """A primary's snapshot arrived: the step that decides on it installs `data`."""

        def event(now_ms: int) -> Ready:
            assert self.snapshot_data is None
            self.snapshot_data = data
            return self.core.on_snapshot(header, now_ms)

        return event

    # ---------------------------------------------------------------- writes (primary)

    def submit(self, command: C, handle: H) -> None:
        """Queue a write for the next batch; `handle` is settled with its result.

        Raises: NotPrimary, Refused (definite: nothing was queued), Unavailable (full).
        """
        self.check_writable()
        if len(self.queue) >= self.queued_max:
            raise Unavailable("too many writes in flight")
        self.queue.append((command, handle))
        assert len(self.queue) <= self.queued_max

    def check_writable(self) -> None:
        """Raises: NotPrimary, Refused."""
        core = self.core
        refusal = core.write_refusal(self.host.now_ms())
        if refusal is not None:
            raise write_error(refusal, core)

    def take_batch(self) -> Batch[C, H] | None:
        """The next batch, if the core allows one now; the host then calls `begin` (on its
        writer thread) and `propose`, as one step."""
        assert not self.stepping
        if not self.queue or self.batch is not None:
            return None
        if not self.core.can_propose(self.host.now_ms()):
            return None
        assert self.core.role == "primary"
        taken = self.queue[: self.batch_commands_max]
        del self.queue[: len(taken)]
        self.stepping = True
        assert 1 <= len(taken) <= self.batch_commands_max
        return taken

    def begin(self, taken: Batch[C, H]) -> tuple[Entry | None, Sequence[R]]:
        """Execute the batch in an open transaction that logs its entry (None: it changed
        nothing, and no transaction stays open)."""
        assert self.stepping
        core = self.core
        version = (core.epoch, core.next_seq())
        entry, results = self.store.begin_batch([command for command, _ in taken], version)
        assert len(results) == len(taken)
        assert entry is None or (entry.epoch, entry.seq) == version
        return entry, results

    def propose(
        self, taken: Batch[C, H], entry: Entry | None, results: Sequence[R]
    ) -> Ready | None:
        """The core's step for an executed batch; None when it logged nothing (its
        results are answered at once: replays, unknown ids)."""
        assert self.stepping
        if entry is None:
            self.stepping = False
            for (_, handle), result in zip(taken, results, strict=True):
                self.host.settle(handle, result, None)
            return None
        assert self.batch is None, "one batch in flight"
        self.batch = (taken, results, entry)
        ready = self.core.propose(entry, self.host.now_ms())
        aborted = any(isinstance(effect, AbortBatch) for effect in ready.persist)
        assert aborted or self.core.inflight is not None or self.core.commit_seq == entry.seq
        return ready

    def fail_batch(self, taken: Batch[C, H], error: BazarError) -> None:
        """`begin` failed (the world's error: the disk); nothing is open."""
        assert self.stepping
        self.stepping = False
        for _, handle in taken:
            self.host.settle(handle, None, error)

    def intent_due(self, entry: Entry) -> bool:
        """After the batch's step: write the intent while the Appends travel, unless the
        batch already ended (a primary without backups commits in its first step)."""
        return self.batch is not None and self.batch[2] == entry

    def write_intent(self, entry: Entry) -> None:
        self.store.write_intent(entry)

    def _finish_batch(self, error: BazarError | None) -> None:
        assert self.batch is not None
        taken, results, _ = self.batch
        self.batch = None
        for (_, handle), result in zip(taken, results, strict=True):
            if error is None:
                self.host.settle(handle, result, None)
            else:
                self.host.settle(handle, None, error)

    def fail_queue(self, error: BazarError) -> None:
        assert error.definite, "a queued write never ran"
        queued, self.queue = self.queue, []
        for _, handle in queued:
            self.host.settle(handle, None, error)

    def stop(self) -> None:
        """The process stops: the queued writes never ran (a definite refusal); the batch in
        flight may yet commit on a backup that a new primary promotes (indefinite)."""
        self.fail_queue(Refused("the replica is stopping; not executed"))
        if self.batch is not None:
            self._finish_batch(Unavailable("the replica is stopping"))

    # ---------------------------------------------------------------- reads

    def check_readable(self) -> None:
        """Raises: Unavailable when this replica may not serve reads (no role in the
        current view, no lease, or a promotion under way)."""
        refusal = self.core.read_refusal(self.host.now_ms())
        if refusal is not None and not self.controls.read_without_check:
            raise Unavailable(refusal.reason)

    def read_check(self, table: str, keys: set[int | str] | None) -> ReadCheck | None:
        """After reading rows of `table`: None if they are committed, else the commit
        point to ask the primary for (CRAQ).

        Raises: Unavailable."""
        plan = self.core.read_check(self.store.tables, table, keys)
        if isinstance(plan, Refusal):
            raise Unavailable(plan.reason)
        return plan

    def read_checked(self, check: ReadCheck, point: CommitPoint) -> list[Entry]:
        """The staged entries to lay over the rows read (those the primary committed).

        Raises: Unavailable."""
        entries = self.core.read_checked(check, point.commit_seq)
        if isinstance(entries, Refusal):
            raise Unavailable(entries.reason)
        return entries

    def commit_point_for_backups(self) -> CommitPoint:
        """`GET /internal/commit`. Raises: Unavailable (see `Replica.commit_point_refusal`)."""
        refusal = self.core.commit_point_refusal()
        if refusal is not None:
            raise Unavailable(refusal.reason)
        point = self.store.commit_point()
        # Memory and disk differ by a step in flight: the core may be ahead (a COMMIT it
        # decided is still on the writer thread) or behind (a promotion's entries are
        # applied on disk and not yet in memory); never beyond the entries it holds.
        assert point.commit_seq <= self.core.last_seq
        return point


def write_error(refusal: WriteRefusal, core: Replica) -> BazarError:
    if refusal == "not_primary":
        return NotPrimary(f"{core.name} is not the primary of the current view")
    if refusal == "no_lease":
        return Refused(f"{core.name} holds no lease from the front end")
    return Refused(f"fewer than --min-in-sync {core.timing.min_in_sync} replicas are in sync")


def _bind(function: Callable[..., Ready], *args: object) -> Callable[[int], Ready]:
    def event(now_ms: int) -> Ready:
        return function(*args, now_ms)

    return event
