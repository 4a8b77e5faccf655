"""One simulated replica process: the production driver (`replication/driver.py`) over a
`SimStore`, on the simulated network and clock.

Why this module is small: it is the simulator's counterpart of `runtime.py`, a `Host` of
the driver, and must decide nothing, so that what the simulator proves is the code that
ships. It keeps what differs from the real process: the step lock is a flag and a queue
(as `asyncio.Lock` holds later steps), the writer thread is a delay between a step's
`persist` and its `complete` (so other steps wait, reads go on, and a crash can land
between them), HTTP calls are simulated calls.

A crash drops the driver (the core, the queue, the open batch) and every timer; the store
survives. A restart boots a new core from the store through `driver.boot`, as the process
does.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, Protocol

from bazar.catalog.service import invalidation
from bazar.errors import BazarError
from bazar.replication.driver import SAFE, Controls, Driver, boot
from bazar.replication.ready import (
    FRONTEND,
    CommitBatch,
    InstallSnapshot,
    Ready,
    Send,
    SnapshotWanted,
    Stage,
)
from bazar.replication.replica import ReadCheck, Replica, Timing
from bazar.testing.sim_network import Call, Failure, Host, Loop, Network
from bazar.testing.sim_store import Command, Outcome, SimStore, as_int
from bazar.wire import (
    Append,
    AppendReply,
    CommitPoint,
    Entry,
    Invalidate,
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
    persist_ms_max: int = 0
    """A step's persist takes from 0 to this long (the writer thread's fsync); the step's
    sends and replies wait for it, other steps queue behind it, and a crash may land in it."""

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
class SalesRequest:
    """GET /internal/sales (the catalog primary's completed sales after `after`)."""

    after: tuple[int, str]
    limit: int


@dataclass(frozen=True, slots=True, order=True)
class Sale:
    seq: int
    key: str
    book_id: int
    quantity: int

    @property
    def mark(self) -> tuple[int, str]:
        return (self.seq, self.key)


@dataclass(frozen=True, slots=True)
class SalesPage:
    sales: tuple[Sale, ...]


@dataclass(frozen=True, slots=True)
class CommitPointRequest:
    """GET /internal/commit."""


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """POST /internal/snapshot: the header and the database bytes."""

    header: Snapshot
    data: bytes


class Observer(Protocol):
    """The checks the replica reports its acts to (`sim_checks.Checks`)."""

    def committed(self, node: str, entries: Sequence[Entry]) -> None: ...

    def primary_decided(self, node: ReplicaNode, entry: Entry, epoch: int) -> None: ...

    def primary_landed(self, node: ReplicaNode, epoch: int) -> None: ...

    def served(self, node: ReplicaNode) -> None: ...

    def commit_point_answered(self, node: ReplicaNode, point: CommitPoint) -> None: ...

    def persisted(self, node: ReplicaNode) -> None: ...

    def sending(self, node: ReplicaNode, epoch: int) -> None: ...


Step = Callable[[int], Ready]


@dataclass(frozen=True, slots=True)
class Internal:
    """A write the process submits itself (the order tier's purchases and reconciler):
    `done(result, error)` is called when the driver settles it."""

    done: Callable[[Outcome | None, BazarError | None], None]


Handle = Call | Internal


class ReplicaNode:
    """A replica process and its durable store; the driver's `Host`."""

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
        disk: random.Random,
        controls: Controls = SAFE,
        tier: str = TIER,
    ) -> None:
        self.name = name
        self.tier = tier
        self.loop = loop
        self.host: Host = loop.hosts[name]
        self.network = network
        self.observer = observer
        self.trace = trace
        self.timing = timing
        self.limits = limits
        self.store = store
        self.disk = disk
        self.controls = controls
        self.driver: Driver[Command, Outcome, Handle] | None = None
        self.busy = False  # a step runs (the runtime's lock)
        self.waiting: deque[Callable[[], None]] = deque()
        self.serving_calls: dict[int, Call] = {}
        self.starts = 0
        self.retired = False  # removed from its tier: never restarted
        network.handlers[name] = self.handle

    @property
    def core(self) -> Replica | None:
        return None if self.driver is None else self.driver.core

    def live(self) -> Driver[Command, Outcome, Handle]:
        assert self.driver is not None, f"{self.name} is not running"
        return self.driver

    def live_core(self) -> Replica:
        return self.live().core

    # ---------------------------------------------------------------- lifecycle

    def boot(self) -> None:
        """Start the process from its store (`ReplicaRuntime.__init__`)."""
        assert self.store.open is None
        self.starts += 1
        core = boot(
            self.store,
            name=self.name,
            tier=self.tier,
            pid=self.starts,
            incarnation=f"{self.name}.{self.host.incarnation}",
            timing=self.timing,
            # The catalog's own invalidation (`catalog/service.py`); orders are not cached.
            notify=invalidation if self.tier == TIER else None,
        )
        self.driver = Driver(
            core,
            self.store,
            self,
            batch_commands_max=self.limits.batch_commands_max,
            queued_max=self.limits.inflight_commands_max,
            controls=self.controls,
        )
        self._arm_tick()

    def crash(self, *, power_loss: bool = False) -> None:
        """kill -9: memory, the open batch and the timers are gone; the store stays. With
        `power_loss` (an OS crash), so are the commits made without an fsync."""
        host = self.host
        host.up = False
        host.paused = False
        host.incarnation += 1
        self.driver = None
        self.busy = False
        self.waiting.clear()
        self.store.open = None
        if power_loss:
            self.store.lose_unsynced()
        calls = list(self.serving_calls.values())
        self.serving_calls.clear()
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

    # ---------------------------------------------------------------- the driver's host

    def now_ms(self) -> int:
        return self.host.clock(self.loop.now_ms)

    now = now_ms

    def transmit(self, send: Send) -> None:
        message = send.message
        if isinstance(message, LeaseRequest):
            self._call(FRONTEND, message, self.limits.lease_timeout_ms, send)
        elif isinstance(message, Append):
            self.observer.sending(self, message.epoch)
            self._call(send.to, message, self.limits.replicate_timeout_ms, send)
        elif isinstance(message, SnapshotWanted):
            self.observer.sending(self, message.epoch)
            self._send_snapshot(send.to, message)
        else:
            assert isinstance(message, Invalidate)
            self._call(FRONTEND, message, self.limits.read_timeout_ms, send)

    def settle(self, handle: Handle, result: Outcome | None, error: BazarError | None) -> None:
        if isinstance(handle, Internal):
            handle.done(result, error)
        else:
            self._answer(handle, result if error is None else failure_of(error))

    def reply(self, handle: Handle, reply: AppendReply) -> None:
        assert isinstance(handle, Call)
        self.network.reply(handle, reply)

    def log(self, line: str) -> None:
        self.trace(line)

    # ---------------------------------------------------------------- steps

    def step(self, event: Step, reply_to: Handle | None = None) -> None:
        """One driver step (`ReplicaRuntime.step`): queued while another runs."""
        if self.busy:
            self.waiting.append(partial(self.step, event, reply_to))
            return
        self.busy = True
        driver = self.live()
        ready = driver.decide(event, reply_to)
        self._decided(ready)
        self._persisted(ready, partial(driver.complete, ready, reply_to))

    def _decided(self, ready: Ready) -> None:
        """What the checks observe of a decision, when it is made: a primary's commit (its
        lease held, every backup staged the entry), whenever its persist lands."""
        core = self.live_core()
        for effect in ready.persist:
            if isinstance(effect, CommitBatch):
                self.observer.primary_decided(self, effect.entry, effect.entry.epoch)
            elif isinstance(effect, Stage) and core.role == "primary" and effect.apply:
                self.observer.primary_decided(self, effect.apply[-1], effect.epoch)

    def _persisted(self, ready: Ready, complete: Callable[[], None]) -> None:
        """The writer thread's work: the persist lands after a drawn delay (meanwhile the
        core has decided and the store still shows the old state to readers, as SQLite's
        reader connection does), and the step completes after another (at once when nothing
        persists). A crash may land before the persist, or between it and the sends."""
        if not ready.persist:
            self._complete(complete)
            return
        landing_ms = self.disk.randint(0, self.limits.persist_ms_max)
        done_ms = self.disk.randint(0, self.limits.persist_ms_max)

        def land() -> None:
            self._persist(ready)
            self.loop.after(
                done_ms, self.name, self.host.incarnation, partial(self._complete, complete)
            )

        self.loop.after(landing_ms, self.name, self.host.incarnation, land)

    def _complete(self, complete: Callable[[], None]) -> None:
        complete()
        self.busy = False
        self._next()

    def _next(self) -> None:
        """The runtime's lock, released: the next waiting step, else the batch loop."""
        while not self.busy and self.waiting:
            self.waiting.popleft()()
        if not self.busy:
            self._try_batch()

    def _persist(self, ready: Ready) -> None:
        """`driver.persist`, then what the checks observe of it."""
        driver, store = self.live(), self.store
        promoting = driver.core.role == "primary"
        driver.persist(ready)
        for effect in ready.persist:
            if isinstance(effect, Stage):
                self.observer.committed(self.name, effect.apply)
                if promoting and effect.apply:
                    self.observer.primary_landed(self, effect.epoch)
            elif isinstance(effect, InstallSnapshot):
                committed = [e for seq, e in sorted(store.log.items()) if seq <= store.commit_seq]
                self.observer.committed(self.name, committed)
            elif isinstance(effect, CommitBatch):
                self.observer.committed(self.name, (effect.entry,))
                self.observer.primary_landed(self, effect.entry.epoch)
        self.observer.persisted(self)

    # ---------------------------------------------------------------- sends

    def _call(self, to: str, message: object, timeout_ms: int, send: Send) -> None:
        def done(answer: object) -> None:
            self.step(self.live().answered(send, answer))

        self.network.call(self.name, to, message, timeout_ms, done)

    def _send_snapshot(self, peer: str, wanted: SnapshotWanted) -> None:
        """`ReplicaRuntime._send_snapshot`: our committed database, as it is now."""
        header, data = self.live().snapshot_for(wanted)
        self.trace(f"transition=snapshot_sent node={peer} commit_seq={header.commit_seq}")

        def done(answer: object) -> None:
            self.step(self.live().snapshot_answered(peer, header, answer))

        timeout_ms = self.limits.snapshot_timeout_ms
        self.network.call(self.name, peer, SnapshotRequest(header, data), timeout_ms, done)

    # ---------------------------------------------------------------- requests

    def handle(self, call: Call) -> None:
        request = call.request
        driver = self.live()
        if isinstance(request, Append):
            self.step(partial(driver.core.on_append, request), call)
        elif isinstance(request, SnapshotRequest):
            self.step(driver.on_snapshot(request.header, request.data), call)
        elif isinstance(request, CommitPointRequest):
            try:
                point = driver.commit_point_for_backups()
            except BazarError as error:
                self.network.reply(call, failure_of(error))
            else:
                self.observer.commit_point_answered(self, point)
                self.network.reply(call, point)
        elif isinstance(request, ReadRequest):
            self.serving_calls[call.ident] = call
            self._read(call, request.book_id)
        elif isinstance(request, SalesRequest):
            self.network.reply(call, self._sales(request))
        else:
            assert isinstance(request, WriteRequest), request
            self.serving_calls[call.ident] = call
            self._submit(call, request.command)

    def _answer(self, call: Call, answer: object) -> None:
        if self.serving_calls.pop(call.ident, None) is not None:
            self.network.reply(call, answer)

    # ---------------------------------------------------------------- writes (primary)

    def _submit(self, call: Call, command: Command) -> None:
        """`ReplicaRuntime.submit`."""
        try:
            self.live().submit(command, call)
        except BazarError as error:
            self._answer(call, failure_of(error))
            return
        if not self.busy:
            self._try_batch()

    def _try_batch(self) -> None:
        """`ReplicaRuntime._run_batch`: the batch is one step of the driver."""
        driver = self.live()
        assert not self.busy
        taken = driver.take_batch()
        if taken is None:
            return
        self.busy = True
        entry, results = driver.begin(taken)
        ready = driver.propose(taken, entry, results)
        if ready is None:
            self.busy = False
            self._next()
            return
        assert entry is not None
        self._decided(ready)

        def complete() -> None:
            driver.complete(ready)
            if driver.intent_due(entry):
                driver.write_intent(entry)  # (overlapping the Appends, as the runtime does)

        self._persisted(ready, complete)

    # ---------------------------------------------------------------- reads

    def _sales(self, request: SalesRequest) -> SalesPage | Failure:
        """`CatalogService._sales`: from the primary only, while it serves, so that the page
        holds every sale committed before it was read."""
        driver = self.live()
        if driver.core.role != "primary":
            return Failure("not_primary", definite=True)
        try:
            driver.check_readable()
        except BazarError as error:
            return failure_of(error)
        sales = sorted(
            Sale(
                as_int(row["seq"]), str(row["key"]), as_int(row["book_id"]), as_int(row["quantity"])
            )
            for row in self.store.rows["purchases"].values()
            if row["status"] == "ok"
        )
        after = [sale for sale in sales if sale.mark > request.after]
        return SalesPage(tuple(after[: request.limit]))

    def _read(self, call: Call, book_id: int) -> None:
        """`CatalogService._book` + `ReplicaRuntime.committed_overlay`."""
        driver = self.live()
        try:
            driver.check_readable()
            self.observer.served(self)
            row = self.store.rows["books"][book_id]
            check = driver.read_check("books", {book_id})
        except BazarError as error:
            self._answer(call, failure_of(error))
            return
        if check is None:
            self._answer(call, reply_of(row))
            return
        self.network.call(
            self.name,
            check.view.primary,
            CommitPointRequest(),
            self.limits.commit_check_timeout_ms,
            lambda answer: self._read_checked(call, row, check, answer),
        )

    def _read_checked(self, call: Call, row: Row, check: ReadCheck, answer: object) -> None:
        if not isinstance(answer, CommitPoint):
            self._answer(call, Failure("commit_check_failed"))
            return
        try:
            entries = self.live().read_checked(check, answer)
        except BazarError as error:
            self._answer(call, failure_of(error))
            return
        for entry in entries:
            for change in entry.changes:
                if isinstance(change, Upsert) and change.table == "books":
                    row = change.row if change.row["id"] == row["id"] else row
        self._answer(call, reply_of(row))


def failure_of(error: BazarError) -> Failure:
    """A replica's error as the simulated front end hears it (its code and definiteness)."""
    return Failure(error.code, definite=error.definite)


def reply_of(row: Row) -> ReadReply:
    return ReadReply(stock=as_int(row["stock"]), version=(as_int(row["epoch"]), as_int(row["seq"])))
