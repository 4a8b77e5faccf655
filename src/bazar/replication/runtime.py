"""The replication runtime: a thin loop that drives `replica.Replica` with SQLite and HTTP.

Every event (a tick, an Append, a reply, a lease answer, a proposed batch) is one core step
under one lock; its `Ready` is applied in order: persist (on the writer thread), `advance`,
then sends, each of which ends in another step (its reply or its failure). The core decides
everything else: what to send whom, when to commit, when to step down, when to promote.

Write path on the primary (one batch in flight; requests that arrive meanwhile form the next
batch, which is the group commit that gives throughput): the batch's commands run in one
open SQLite transaction that logs one entry (`begin_batch`); the core sends it to every
backup of the view and says when to COMMIT (`CommitBatch`) or ROLLBACK (`AbortBatch`).
Readers never see the batch before its COMMIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Generic, TypeVar

from bazar.config import Cluster, Node
from bazar.errors import Abandoned, BazarError, NotPrimary, Refused, Unavailable
from bazar.replication.metrics import ReplicaMetrics, timed
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
from bazar.replication.replica import Notify, Replica, Timing
from bazar.replication.storage import (
    Machine,
    Store,
    begin_batch,
    commit_batch,
    install_snapshot,
    prune_log,
    rollback_batch,
    save_epoch,
    stage_entries,
    write_intent,
)
from bazar.transport import Transport, TransportError
from bazar.wire import (
    Append,
    AppendReply,
    CommitPoint,
    Entry,
    Invalidate,
    InvalidateReply,
    LeaseReply,
    LeaseRequest,
    ReplicaStatus,
    Snapshot,
    View,
    encode,
)

SNAPSHOT_HEADER = "X-Bazar-Snapshot"

C = TypeVar("C")
R = TypeVar("R")

log = logging.getLogger("bazar.replication")

Batch = list[tuple[C, "asyncio.Future[R]"]]


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def timing_of(cluster: Cluster) -> Timing:
    limits = cluster.limits
    return Timing(
        lease_ms=limits.lease_ms,
        lease_renew_ms=limits.lease_renew_ms,
        retry_ms=limits.replicate_retry_ms,
        commit_notice_ms=limits.commit_notice_delay_ms,
        catch_up_entries_max=limits.catch_up_entries_max,
        invalidate_retry_ms_max=limits.invalidate_retry_ms_max,
        min_in_sync=cluster.min_in_sync,
        log_entries_max=limits.log_entries_max,
    )


class ReplicaRuntime(Generic[C, R]):
    """One replica of one tier: its store, core state, and replication traffic."""

    def __init__(
        self,
        *,
        cluster: Cluster,
        node: Node,
        store: Store,
        machine: Machine[C, R],
        transport: Transport,
        metrics: ReplicaMetrics,
        notify: Notify | None = None,
    ) -> None:
        meta = store.load_meta()
        self.cluster = cluster
        self.limits = cluster.limits
        self.node = node
        self.store = store
        self.machine = machine
        self.transport = transport
        self.metrics = metrics
        self.core = Replica(
            name=node.name,
            tier=node.tier,
            pid=os.getpid(),
            incarnation=uuid.uuid4().hex,
            boot_epoch=meta.epoch,
            epoch=meta.epoch,
            commit_seq=meta.commit_seq,
            commit_epoch=meta.commit_epoch,
            log=store,
            timing=timing_of(cluster),
            notify=notify,
            staged={entry.seq: entry for entry in meta.staged},
        )
        self.urls: dict[str, str] = {}
        self.primary_changed: dict[str, asyncio.Event] = {}
        self._primaries: dict[str, str] = {}
        self._queue: Batch[C, R] = []
        self._batch: tuple[Batch[C, R], list[R]] | None = None
        self._batch_done = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.isolated_from_frontend = False  # a test hook: a network cut to the front end
        self._snapshot: bytes | None = None
        self._snapshot_lock = asyncio.Lock()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self.spawn(self._batch_loop(), "batch-loop")
        self.spawn(self._tick_loop(), "tick-loop")

    async def stop(self) -> None:
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_queue(Unavailable("the replica is stopping"))
        if self._batch is not None:
            self._finish_batch(Unavailable("the replica is stopping"))

    def spawn(self, coroutine: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.limits.tick_ms / 1000)
            await self.step(self.core.tick)

    # ---------------------------------------------------------------- steps

    async def step(self, event: Callable[[int], Ready]) -> Ready:
        """Run one core step and apply its Ready: persist, advance, then send."""
        async with self._lock:
            ready = event(monotonic_ms())
            await self._persist(ready)
            self.core.advance(ready)
        for line in ready.transitions:
            log.info(line)
        for send in ready.send:
            self.spawn(self._send(send), "send")
        self._after_step()
        return ready

    async def _persist(self, ready: Ready) -> None:
        for effect in ready.persist:
            if isinstance(effect, SaveEpoch):
                await self.store.write(
                    partial(save_epoch, epoch=effect.epoch, intent=self.store.intent)
                )
            elif isinstance(effect, Stage):
                await self._stage(effect)
            elif isinstance(effect, CommitBatch):
                await self._commit(effect.entry)
            elif isinstance(effect, PruneLog):
                await self.store.write(partial(prune_log, below_seq=effect.below_seq))
            elif isinstance(effect, InstallSnapshot):
                data, self._snapshot = self._snapshot, None
                assert data is not None, "a snapshot is installed only in its own step"
                await self.store.write(partial(install_snapshot, data=data, epoch=effect.epoch))
            else:
                assert isinstance(effect, AbortBatch)
                await asyncio.shield(self.store.write(rollback_batch))
                self._finish_batch(Abandoned(f"the write was abandoned: {effect.reason}"))

    async def _stage(self, effect: Stage) -> None:
        stage = partial(
            stage_entries,
            tables=self.store.tables,
            epoch=effect.epoch,
            truncate_from=effect.truncate_from,
            entries=effect.stage,
            apply=effect.apply,
            commit_seq=effect.commit_seq,
        )
        await self.store.write(timed(self.metrics.stage_seconds, stage))
        if effect.stage:
            self.metrics.stage_entries.observe(len(effect.stage))

    async def _commit(self, entry: Entry) -> None:
        try:
            commit = partial(commit_batch, intent=self.store.intent, entry=entry)
            await self.store.write(timed(self.metrics.commit_seconds, commit))
        except Exception:
            # Whether the entry is on disk is unknown, and memory cannot be made to agree:
            # restart from the disk (the supervisor does it; the boot epoch rule then forces
            # a new epoch, so this (epoch, seq) is never written again).
            log.critical("transition=exit reason=commit_failed seq=%d", entry.seq, exc_info=True)
            os._exit(1)
        self._finish_batch(None)

    def _after_step(self) -> None:
        view = self.core.view
        if self._queue and (view is None or self.core.role != "primary"):
            self._fail_queue(NotPrimary(f"{self.node.name} is not the primary"))
        if self._queue:
            self._wakeup.set()
        for tier, known in self.core.views.items():
            event = self.primary_changed.setdefault(tier, asyncio.Event())
            if self._primaries.get(tier) != known.primary:
                self._primaries[tier] = known.primary
                event.set()
                self.primary_changed[tier] = asyncio.Event()
            for member in known.members:
                self.urls[member.name] = member.url

    # ---------------------------------------------------------------- sends

    async def _send(self, send: Send) -> None:
        message = send.message
        if isinstance(message, LeaseRequest):
            await self._send_lease(message)
        elif isinstance(message, SnapshotWanted):
            await self._send_snapshot(send.to, message)
        elif isinstance(message, Invalidate):
            await self._send_invalidate(message)
        else:
            await self._send_append(send.to, message)

    async def _send_lease(self, message: LeaseRequest) -> None:
        try:
            self._cut_off()
            reply = await self.transport.call(
                "POST",
                self.cluster.frontend.url + "/internal/lease",
                LeaseReply,
                body=message,
                timeout_ms=self.limits.lease_timeout_ms,
            )
        except (TransportError, BazarError):
            await self.step(partial(self.core.on_lease_failed, message.seq))
            return
        await self.step(partial(self.core.on_lease_reply, message.seq, reply.views, reply.granted))

    async def _send_invalidate(self, message: Invalidate) -> None:
        try:
            self._cut_off()
            await self.transport.call(
                "POST",
                self.cluster.frontend.url + "/internal/invalidate",
                InvalidateReply,
                body=message,
                timeout_ms=self.limits.read_timeout_ms,
            )
        except (TransportError, BazarError) as error:
            log.warning("transition=frontend_unreachable error=%s", error)
            await self.step(self.core.on_invalidate_failed)
            return
        await self.step(self.core.on_invalidate_reply)

    async def _send_snapshot(self, peer: str, wanted: SnapshotWanted) -> None:
        url = self.urls.get(peer)
        try:
            if url is None:
                raise Unavailable(f"no address for {peer}")
            data, commit_seq, commit_epoch = await asyncio.to_thread(self.store.snapshot)
            header = Snapshot(
                epoch=wanted.epoch,
                primary=wanted.primary,
                commit_seq=commit_seq,
                commit_epoch=commit_epoch,
            )
            log.info(
                "transition=snapshot_sent node=%s commit_seq=%d bytes=%d",
                peer,
                commit_seq,
                len(data),
            )
            reply = await self.transport.call(
                "POST",
                url + "/internal/snapshot",
                AppendReply,
                raw=data,
                headers={SNAPSHOT_HEADER: encode(header).decode()},
                timeout_ms=self.limits.snapshot_timeout_ms,
            )
        except (TransportError, BazarError, OSError):
            await self.step(partial(self.core.on_append_failed, peer))
            return
        await self.step(partial(self.core.on_snapshot_reply, peer, header, reply))

    async def on_snapshot(self, header: Snapshot, data: bytes) -> AppendReply:
        async with self._snapshot_lock:  # one snapshot at a time: the step takes its bytes
            self._snapshot = data
            try:
                ready = await self.step(partial(self.core.on_snapshot, header))
            finally:
                self._snapshot = None
        assert ready.reply is not None
        return ready.reply

    def _cut_off(self) -> None:
        """Raises: TransportError while isolated from the front end (test hook)."""
        if self.isolated_from_frontend:
            raise TransportError("isolated from the front end (test hook)", definite=False)

    async def _send_append(self, peer: str, message: Append) -> None:
        url = self.urls.get(peer)
        try:
            if url is None:
                raise Unavailable(f"no address for {peer}")
            reply = await self.transport.call(
                "POST",
                url + "/internal/append",
                AppendReply,
                body=message,
                timeout_ms=self.limits.replicate_timeout_ms,
            )
        except (TransportError, BazarError):
            await self.step(partial(self.core.on_append_failed, peer))
            return
        await self.step(partial(self.core.on_append_reply, peer, message, reply))

    # ---------------------------------------------------------------- writes (primary)

    async def submit(self, command: C) -> R:
        """Execute one command through the replicated log and return its result.

        Raises: NotPrimary, Refused (definitely not executed), Unavailable.
        """
        self.check_writable()
        if len(self._queue) >= self.limits.inflight_commands_max:
            raise Unavailable("too many writes in flight")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((command, future))
        self._wakeup.set()
        return await asyncio.shield(future)

    def check_writable(self) -> None:
        """Raises: NotPrimary, Refused (both definite: nothing was queued, so nothing can
        run later on its own)."""
        core = self.core
        if core.role != "primary":
            raise NotPrimary(f"{self.node.name} is not the primary of the current view")
        if not core.leased(monotonic_ms()):
            raise Refused(f"{self.node.name} holds no lease from the front end")
        if not core.enough_in_sync():
            raise Refused(
                f"fewer than --min-in-sync {core.timing.min_in_sync} replicas are in sync"
            )

    async def _batch_loop(self) -> None:
        try:
            while not self._stopping:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue and await self._run_batch():
                    await self._batch_done.wait()  # set at once when the batch logged nothing
        except Exception:
            # A bug, with perhaps a batch transaction left open: nothing could be written
            # again. Restart from the disk (the supervisor does it) rather than limp on.
            log.critical("transition=exit reason=batch_loop_failed", exc_info=True)
            os._exit(1)

    async def _run_batch(self) -> bool:
        """Start the next batch if the core allows one; False when it must wait."""
        async with self._lock:
            core = self.core
            if not core.can_propose(monotonic_ms()):
                return False
            batch = self._queue[: self.limits.batch_commands_max]
            del self._queue[: len(batch)]
            version = (core.epoch, core.next_seq())
            commands = [command for command, _ in batch]
            try:
                entry, results = await self.store.write(
                    partial(begin_batch, machine=self.machine, commands=commands, version=version)
                )
            except Exception:
                log.exception("batch failed")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(Unavailable("the write could not be executed"))
                self._batch_done.set()
                return True
            if entry is None:
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
                self._batch_done.set()
                return True
            now_ms = monotonic_ms()
            if not core.can_propose(now_ms):
                # The lease ran out while the batch executed (a pause, a stall): it was never
                # sent, so rolling it back makes its refusal definite.
                await self.store.write(rollback_batch)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(Refused("the lease ran out; not executed"))
                self._batch_done.set()
                return True
            self._batch = (batch, results)
            self._batch_done.clear()
            self.metrics.batch_commands.observe(len(batch))
            ready = core.propose(entry, now_ms)
            await self._persist(ready)
            core.advance(ready)
        for line in ready.transitions:
            log.info(line)
        for send in ready.send:
            self.spawn(self._send(send), "send")
        # Our own fsync, on the writer thread while the Appends travel; the batch's COMMIT
        # is queued behind it there (storage.IntentLog).
        self.spawn(self._write_intent(entry), "intent")
        return True

    async def _write_intent(self, entry: Entry) -> None:
        try:
            intent = partial(write_intent, intent=self.store.intent, entry=entry)
            await self.store.write(timed(self.metrics.intent_seconds, intent))
        except Exception:
            log.warning("the intent of seq %d was not written; its commit syncs", entry.seq)

    def _finish_batch(self, error: BazarError | None) -> None:
        assert self._batch is not None
        batch, results = self._batch
        self._batch = None
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        self._batch_done.set()

    def queued(self) -> int:
        """Writes waiting for the next batch."""
        return len(self._queue)

    def _fail_queue(self, error: BazarError) -> None:
        queued, self._queue = self._queue, []
        for _, future in queued:
            if not future.done():
                future.set_exception(error)

    # ---------------------------------------------------------------- backup side

    async def on_append(self, message: Append) -> AppendReply:
        ready = await self.step(partial(self.core.on_append, message))
        assert ready.reply is not None
        return ready.reply

    # ---------------------------------------------------------------- views and reads

    def status(self) -> ReplicaStatus:
        return self.core.status()

    def view_of(self, tier: str) -> View:
        """Raises: Unavailable before the front end has announced that tier's view."""
        view = self.core.views.get(tier)
        if view is None:
            raise Unavailable(f"no view of the {tier} tier yet")
        return view

    def failover(self, tier: str) -> asyncio.Event:
        """An event set when the tier's primary next changes (to abandon a call to a primary
        that a failover replaced)."""
        return self.primary_changed.setdefault(tier, asyncio.Event())

    def readable(self) -> None:
        """Raises: Unavailable when this replica may not serve reads (no role in the current
        view, no lease, or a promotion under way)."""
        if not self.core.serving(monotonic_ms()):
            raise Unavailable(f"{self.node.name} is not serving reads")

    def commit_point_for_backups(self) -> CommitPoint:
        """`GET /internal/commit`: a backup asks whether a write it holds staged committed.

        Raises: Unavailable unless we are the primary of our view, promotion done: while
        promoting, the staged suffix may have been committed (and acknowledged) by the old
        primary; before the view makes us primary again after a restart, so may entries that
        an OS crash took from our tables (`storage.recover_intent` stages them again). Either
        way our commit point would tell a backup to answer with the value from before them."""
        if self.core.promoting:
            raise Unavailable(f"{self.node.name} is promoting its staged entries; retry")
        if self.core.role != "primary":
            raise Unavailable(f"{self.node.name} is not the primary of its view; retry")
        return self.commit_point()

    def commit_point(self) -> CommitPoint:
        """The locally committed position `(epoch of its entry, seq)`, read from the
        database in one statement: on a primary a reader can only have seen data up to this
        point (same snapshot rule as every read). Not the current epoch: a view change that
        keeps the primary must not make an older state look newer than a pending write's
        cache invalidation."""
        row = self.store.reader.execute(
            "SELECT meta.value, log.epoch FROM meta LEFT JOIN log ON log.seq = meta.value"
            " WHERE meta.key = 'commit_seq'"
        ).fetchone()
        return CommitPoint(epoch=int(row[1] or 0), commit_seq=int(row[0]))

    async def committed_overlay(self, table: str, keys: set[int | str] | None) -> list[Entry]:
        """Staged entries that the primary has committed and that touch `keys` of `table`
        (any key when None): the CRAQ rule that keeps backup reads linearizable.

        Raises: Unavailable when the primary cannot be asked.
        """
        dirty = self.core.dirty(self.store.tables, table)
        if not dirty or (keys is not None and not (dirty & keys)):
            return []
        if self.core.role == "primary":
            raise Unavailable("the primary is promoting its staged entries; retry")
        # Taken before the wait: the caller read its rows before it, and the entries may be
        # applied (and leave `staged`) while we wait for the primary.
        staged = self.core.committed_overlay(self.core.last_seq)
        truncations = self.core.truncations
        view = self.view_of(self.node.tier)
        try:
            point = await self.transport.call(
                "GET",
                view.url_of(view.primary) + "/internal/commit",
                CommitPoint,
                timeout_ms=self.limits.commit_check_timeout_ms,
            )
        except (TransportError, BazarError) as error:
            raise Unavailable(f"cannot check a pending write with the primary: {error}") from None
        if self.core.truncations != truncations:
            # A newer primary replaced staged entries while we waited: the snapshot may hold
            # one that will never commit. Let the front end ask another replica.
            raise Unavailable("the log changed during the read; retry")
        return [entry for entry in staged if entry.seq <= point.commit_seq]
