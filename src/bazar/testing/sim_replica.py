"""One simulated replica process: `replication.replica.Replica` driven exactly as `runtime.py`
drives it, over a `SimStore` and the simulated network.

Why a copy of the runtime's order rather than a cleaner loop: the simulator tests the cores
under the rules the real process applies them with, so each step is `event(now)`, then
`persist` in order, then `core.advance`, then the sends; after every step a queued write
fails when the process is not the primary, and the batch loop starts the next batch when
`can_propose` allows (`_after_step`, `_run_batch`). Reads follow `catalog/service.py`: only
while `serving`, and on a backup a row that a staged entry writes is checked with the
primary's commit point (CRAQ), failing the read when the primary cannot be asked.

A crash drops the core, the queue, the open batch and every timer; the store survives. A
restart rebuilds the core from the store as `ReplicaRuntime.__init__` does (boot epoch =
epoch on disk, staged = the log above commit_seq).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
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
from bazar.replication.replica import Replica, Timing
from bazar.testing.sim_network import Call, Failure, Host, Loop, Network
from bazar.testing.sim_store import KEYS, Command, Outcome, SimStore, SnapshotData, as_int
from bazar.wire import (
    Append,
    AppendReply,
    CommitPoint,
    Entry,
    LeaseReply,
    LeaseRequest,
    Row,
    Snapshot,
    Upsert,
    Version,
)

TIER: Literal["catalog"] = "catalog"


@dataclass(frozen=True, slots=True)
class SimLimits:
    """Timeouts and bounds of the simulated processes (`config.Limits` names)."""

    tick_ms: int = 10
    view_tick_ms: int = 20
    lease_timeout_ms: int = 300
    replicate_timeout_ms: int = 500
    commit_check_timeout_ms: int = 200
    read_timeout_ms: int = 500
    write_timeout_ms: int = 5000
    read_deadline_ms: int = 4000
    retry_ms: int = 50
    batch_commands_max: int = 8
    inflight_commands_max: int = 64
    client_timeout_ms: int = 10_000
    write_retry_deadline_ms: int = 3000
    snapshot_timeout_ms: int = 10_000

    def __post_init__(self) -> None:
        assert self.commit_check_timeout_ms < self.read_timeout_ms
        assert self.read_deadline_ms < self.write_timeout_ms < self.client_timeout_ms


@dataclass(frozen=True, slots=True)
class ReadRequest:
    book_id: int


@dataclass(frozen=True, slots=True)
class ReadReply:
    stock: int
    version: Version


@dataclass(frozen=True, slots=True)
class WriteRequest:
    command: Command


@dataclass(frozen=True, slots=True)
class CommitPointRequest:
    """GET /internal/commit."""


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """POST /internal/snapshot: the header and the database bytes."""

    header: Snapshot
    data: SnapshotData


class Observer(Protocol):
    """The checks the replica reports its acts to (`sim_checks.Checks`)."""

    def committed(self, node: str, entries: Sequence[Entry]) -> None: ...

    def primary_committed(self, node: ReplicaNode, entry: Entry) -> None: ...

    def served(self, node: ReplicaNode) -> None: ...

    def persisted(self, node: ReplicaNode) -> None: ...

    def sending(self, node: ReplicaNode, epoch: int) -> None: ...


class ReplicaNode:
    """A replica process and its durable store."""

    def __init__(
        self,
        name: str,
        *,
        loop: Loop,
        network: Network,
        observer: Observer,
        trace: Callable[[str], None],
        timing: Timing,
        limits: SimLimits,
        store: SimStore,
    ) -> None:
        self.name = name
        self.loop = loop
        self.host: Host = loop.hosts[name]
        self.network = network
        self.observer = observer
        self.trace = trace
        self.timing = timing
        self.limits = limits
        self.store = store
        self.core: Replica | None = None
        self.queue: list[tuple[Command, Call]] = []
        self.batch: tuple[list[Call], list[Outcome]] | None = None
        self.serving_calls: dict[int, Call] = {}
        self.snapshot: SnapshotData | None = None  # the bytes of the snapshot being installed
        self.starts = 0
        network.handlers[name] = self.handle

    def now(self) -> int:
        return self.host.clock(self.loop.now_ms)

    def live_core(self) -> Replica:
        assert self.core is not None, f"{self.name} has no core"
        return self.core

    # ---------------------------------------------------------------- lifecycle

    def boot(self) -> None:
        """Start the process from its store (`ReplicaRuntime.__init__`)."""
        store = self.store
        assert store.open is None
        store.recover_intent()
        self.starts += 1
        self.core = Replica(
            name=self.name,
            tier=TIER,
            pid=self.starts,
            incarnation=f"{self.name}.{self.host.incarnation}",
            boot_epoch=store.epoch,
            epoch=store.epoch,
            commit_seq=store.commit_seq,
            commit_epoch=store.commit_epoch,
            log=store,
            timing=self.timing,
            staged={entry.seq: entry for entry in store.staged},
        )
        self._arm_tick()

    def crash(self, *, power_loss: bool = False) -> None:
        """kill -9: memory, the open batch and the timers are gone; the store stays. With
        `power_loss` (an OS crash), so are the commits made without an fsync."""
        host = self.host
        host.up = False
        host.paused = False
        host.incarnation += 1
        self.core = None
        self.store.open = None
        if power_loss:
            self.store.lose_unsynced()
        calls = list(self.serving_calls.values())
        self.serving_calls.clear()
        self.queue.clear()
        self.batch = None
        for call in calls:
            self.network.reply(call, Failure("reset"))
        self.loop.release(host)

    def restart(self) -> None:
        assert not self.host.up
        self.host.up = True
        self.boot()

    def _arm_tick(self) -> None:
        self.loop.timer(self.host, self.limits.tick_ms, self._tick)

    def _tick(self) -> None:
        self.step(self.live_core().tick)
        self._arm_tick()

    # ---------------------------------------------------------------- steps

    def step(self, event: Callable[[int], Ready]) -> Ready:
        """One core step and its Ready (`ReplicaRuntime.step`)."""
        ready = event(self.now())
        self._apply(ready)
        self._after_step()
        return ready

    def _apply(self, ready: Ready) -> None:
        core = self.live_core()
        self._persist(ready)
        core.advance(ready)
        self.observer.persisted(self)
        for line in ready.transitions:
            self.trace(line)
        for send in ready.send:
            self._send(send)

    def _persist(self, ready: Ready) -> None:
        core = self.live_core()
        store = self.store
        for effect in ready.persist:
            if isinstance(effect, SaveEpoch):
                store.save_epoch(effect.epoch)
            elif isinstance(effect, Stage):
                promotion = core.role == "primary" and effect.epoch == core.epoch
                store.stage(effect)
                self.observer.committed(self.name, effect.apply)
                if promotion and effect.apply:
                    self.observer.primary_committed(self, effect.apply[-1])
            elif isinstance(effect, PruneLog):
                store.prune(effect.below_seq)
            elif isinstance(effect, InstallSnapshot):
                data, self.snapshot = self.snapshot, None
                assert data is not None, "a snapshot is installed only in its own step"
                store.install(data, effect.epoch)
                committed = [e for seq, e in sorted(store.log.items()) if seq <= store.commit_seq]
                self.observer.committed(self.name, committed)
            elif isinstance(effect, CommitBatch):
                store.commit_batch(effect.entry)
                self.observer.committed(self.name, (effect.entry,))
                self.observer.primary_committed(self, effect.entry)
                self._finish_batch(None)
            else:
                assert isinstance(effect, AbortBatch)
                store.abort_batch()
                self._finish_batch(Failure("abandoned"))

    def _after_step(self) -> None:
        core = self.live_core()
        if self.queue and (core.view is None or core.role != "primary"):
            queued, self.queue = self.queue, []
            for _, call in queued:
                self._answer(call, Failure("not_primary", definite=True))
        self._try_batch()

    def _send(self, send: Send) -> None:
        message = send.message
        if isinstance(message, LeaseRequest):
            seq = message.seq
            timeout_ms = self.limits.lease_timeout_ms
            self.network.call(
                self.name, FRONTEND, message, timeout_ms, lambda answer: self._leased(seq, answer)
            )
        elif isinstance(message, SnapshotWanted):
            self.observer.sending(self, message.epoch)
            self._send_snapshot(send.to, message)
        elif isinstance(message, Append):
            self.observer.sending(self, message.epoch)
            peer = send.to
            self.network.call(
                self.name,
                peer,
                message,
                self.limits.replicate_timeout_ms,
                lambda answer: self._appended(peer, message, answer),
            )
        else:
            raise AssertionError(f"the simulator runs without notify: {message!r}")

    def _leased(self, seq: int, answer: object) -> None:
        core = self.live_core()
        if isinstance(answer, LeaseReply):
            self.step(partial(core.on_lease_reply, seq, answer.views, answer.granted))
        else:
            self.step(partial(core.on_lease_failed, seq))

    def _send_snapshot(self, peer: str, wanted: SnapshotWanted) -> None:
        """`ReplicaRuntime._send_snapshot`: our committed database, as it is now."""
        data = self.store.snapshot()
        header = Snapshot(
            epoch=wanted.epoch,
            primary=wanted.primary,
            commit_seq=data.commit_seq,
            commit_epoch=data.log[data.commit_seq].epoch if data.commit_seq else 0,
        )
        self.trace(f"transition=snapshot_sent node={peer} commit_seq={data.commit_seq}")
        self.network.call(
            self.name,
            peer,
            SnapshotRequest(header, data),
            self.limits.snapshot_timeout_ms,
            lambda answer: self._snapshot_answered(peer, header, answer),
        )

    def _snapshot_answered(self, peer: str, header: Snapshot, answer: object) -> None:
        core = self.live_core()
        if isinstance(answer, AppendReply):
            self.step(partial(core.on_snapshot_reply, peer, header, answer))
        else:
            self.step(partial(core.on_append_failed, peer))

    def _appended(self, peer: str, sent: Append, answer: object) -> None:
        core = self.live_core()
        if isinstance(answer, AppendReply):
            self.step(partial(core.on_append_reply, peer, sent, answer))
        else:
            self.step(partial(core.on_append_failed, peer))

    # ---------------------------------------------------------------- requests

    def handle(self, call: Call) -> None:
        request = call.request
        core = self.live_core()
        if isinstance(request, Append):
            ready = self.step(partial(core.on_append, request))
            assert ready.reply is not None
            self.network.reply(call, ready.reply)
        elif isinstance(request, SnapshotRequest):
            self.snapshot = request.data
            try:
                ready = self.step(partial(core.on_snapshot, request.header))
            finally:
                self.snapshot = None
            assert ready.reply is not None
            self.network.reply(call, ready.reply)
        elif isinstance(request, CommitPointRequest):
            # `ReplicaRuntime.commit_point_for_backups`: (epoch of the entry at commit_seq,
            # commit_seq), only from the primary of its view with its promotion done (else a
            # staged suffix, or entries an OS crash took, may be committed already).
            if core.promoting:
                self._answer(call, Failure("promoting"))
            elif core.role != "primary":
                self._answer(call, Failure("not_primary"))
            else:
                store = self.store
                point = CommitPoint(epoch=store.commit_epoch, commit_seq=store.commit_seq)
                self.network.reply(call, point)
        elif isinstance(request, ReadRequest):
            self.serving_calls[call.ident] = call
            self._read(call, request.book_id)
        else:
            assert isinstance(request, WriteRequest), request
            self.serving_calls[call.ident] = call
            self._submit(call, request.command)

    def _answer(self, call: Call, answer: object) -> None:
        if self.serving_calls.pop(call.ident, None) is not None:
            self.network.reply(call, answer)

    # ---------------------------------------------------------------- writes (primary)

    def _submit(self, call: Call, command: Command) -> None:
        """`ReplicaRuntime.submit`: refuse definitely, or queue for the batch loop."""
        core = self.live_core()
        if core.role != "primary":
            self._answer(call, Failure("not_primary", definite=True))
        elif not core.leased(self.now()):
            self._answer(call, Failure("no_lease", definite=True))
        elif not core.enough_in_sync():
            self._answer(call, Failure("min_in_sync", definite=True))
        elif len(self.queue) >= self.limits.inflight_commands_max:
            self._answer(call, Failure("busy"))
        else:
            self.queue.append((command, call))
            self._try_batch()

    def _try_batch(self) -> None:
        """`_batch_loop` + `_run_batch`: one batch in flight, while the core allows."""
        while self.queue and self.batch is None:
            core = self.live_core()
            now = self.now()
            if not core.can_propose(now):
                return
            taken = self.queue[: self.limits.batch_commands_max]
            del self.queue[: len(taken)]
            version = (core.epoch, core.next_seq())
            entry, results = self.store.begin_batch([command for command, _ in taken], version)
            calls = [call for _, call in taken]
            if entry is None:
                for call, result in zip(calls, results, strict=True):
                    self._answer(call, result)
                continue
            self.batch = (calls, results)
            self._apply(core.propose(entry, now))
            self.store.write_intent(entry)  # (overlapping the Appends, as `_write_intent`)

    def _finish_batch(self, error: Failure | None) -> None:
        assert self.batch is not None
        calls, results = self.batch
        self.batch = None
        for call, result in zip(calls, results, strict=True):
            self._answer(call, result if error is None else error)

    # ---------------------------------------------------------------- reads

    def _read(self, call: Call, book_id: int) -> None:
        """`CatalogService._book` + `ReplicaRuntime.committed_overlay`."""
        core = self.live_core()
        if not core.serving(self.now()):
            self._answer(call, Failure("not_serving"))
            return
        self.observer.served(self)
        row = self.store.tables["books"][book_id]
        if book_id not in core.dirty(KEYS, "books"):
            self._answer(call, reply_of(row))
            return
        if core.role == "primary":
            self._answer(call, Failure("promoting"))
            return
        staged = core.committed_overlay(core.last_seq)
        truncations = core.truncations
        view = core.views.get(TIER)
        if view is None:
            self._answer(call, Failure("no_view"))
            return
        self.network.call(
            self.name,
            view.primary,
            CommitPointRequest(),
            self.limits.commit_check_timeout_ms,
            lambda answer: self._read_checked(call, row, staged, truncations, answer),
        )

    def _read_checked(
        self, call: Call, row: Row, staged: list[Entry], truncations: int, answer: object
    ) -> None:
        if not isinstance(answer, CommitPoint):
            self._answer(call, Failure("commit_check_failed"))
            return
        if self.live_core().truncations != truncations:
            self._answer(call, Failure("log_changed"))
            return
        for entry in staged:
            if entry.seq > answer.commit_seq:
                continue
            for change in entry.changes:
                if isinstance(change, Upsert) and change.table == "books":
                    row = change.row if change.row["id"] == row["id"] else row
        self._answer(call, reply_of(row))


def reply_of(row: Row) -> ReadReply:
    return ReadReply(stock=as_int(row["stock"]), version=(as_int(row["epoch"]), as_int(row["seq"])))
