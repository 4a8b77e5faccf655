"""The replication runtime: drives `core.replica.Replica` with SQLite and HTTP.

Write path on the primary (one batch in flight; requests that arrive meanwhile form the next
batch, which is the group commit that gives throughput):
1. execute the batch's commands in one open SQLite transaction, logging one entry;
2. send the entry to every backup of the view and wait until all have staged it (fsync);
3. COMMIT locally (fsync), then answer every command of the batch.
Readers on the primary never see step 1 before step 3. Backups stage, then apply once the
commit point (carried by the next Append, or an idle commit notice) covers an entry.

Order of effects everywhere: persist, then send (STYLE rule 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any, Generic, TypeVar

import msgspec

from bazar.config import Cluster, Node
from bazar.core.replica import AppendPlan, Replica
from bazar.errors import BazarError, NotPrimary, Refused, Unavailable
from bazar.storage import (
    Machine,
    Store,
    begin_batch,
    commit_batch,
    rollback_batch,
    save_epoch,
    stage_entries,
)
from bazar.transport import Transport, TransportError
from bazar.wire import (
    Append,
    AppendReply,
    CommitPoint,
    Entry,
    Heartbeat,
    Invalidate,
    ReplicaStatus,
    View,
)

C = TypeVar("C")
R = TypeVar("R")

log = logging.getLogger("bazar.replication")

CommitHook = Callable[[Entry], Coroutine[Any, Any, None]]


class Deposed(Exception):
    """A backup knows a newer epoch: this primary must stop."""


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
    ) -> None:
        meta = store.load_meta()
        self.cluster = cluster
        self.limits = cluster.limits
        self.node = node
        self.store = store
        self.machine = machine
        self.transport = transport
        self.core = Replica(
            name=node.name,
            tier=node.tier,
            pid=os.getpid(),
            incarnation=uuid.uuid4().hex,
            boot_epoch=meta.epoch,
            epoch=meta.epoch,
            commit_seq=meta.commit_seq,
            commit_epoch=meta.commit_epoch,
            staged={entry.seq: entry for entry in meta.staged},
        )
        self.views: dict[str, View] = {}
        self._queue: list[tuple[C, asyncio.Future[R]]] = []
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._batch_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.before_commit: CommitHook | None = None
        self.invalidating: Invalidate | None = None
        self.stalled_since: float | None = None

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._batch_task = asyncio.create_task(self._batch_loop(), name="batch-loop")

    async def stop(self) -> None:
        self._stopping = True
        tasks = [*self._tasks, *([self._batch_task] if self._batch_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _, future in self._queue:
            if not future.done():
                future.set_exception(Unavailable("the replica is stopping"))

    def spawn(self, coroutine: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------- views

    async def on_heartbeat(self, heartbeat: Heartbeat) -> ReplicaStatus:
        """Adopt the front end's views (persisting a new epoch first)."""
        view = heartbeat.views.get(self.node.tier)
        self.views = dict(heartbeat.views)
        if view is None:
            return self.status()
        if view.epoch == self.core.epoch and not self.core.staged:
            self.core.install_view(view)  # same epoch: nothing to persist, no need to wait
            return self.status()
        async with self._lock:
            before = (self.core.role, self.core.epoch)
            if view.epoch > self.core.epoch:
                await self.store.write(partial(save_epoch, epoch=view.epoch))
            self.core.install_view(view)
            if self.core.needs_promotion():
                await self._persist(self.core.promotion_plan())
            after = (self.core.role, self.core.epoch)
        if after != before:
            log.info(
                "transition=view tier=%s node=%s epoch=%d role=%s",
                self.node.tier,
                self.node.name,
                after[1],
                after[0],
            )
            self._wakeup.set()
        return self.status()

    def status(self) -> ReplicaStatus:
        return msgspec.structs.replace(self.core.status(), invalidating=self.invalidating)

    def view_of(self, tier: str) -> View:
        """Raises: Unavailable before the front end has announced that tier's view."""
        view = self.views.get(tier)
        if view is None:
            raise Unavailable(f"no view of the {tier} tier yet")
        return view

    # ---------------------------------------------------------------- writes (primary)

    async def submit(self, command: C) -> R:
        """Execute one command through the replicated log and return its result.

        Raises: NotPrimary, Unavailable.
        """
        if self.core.role != "primary":
            raise NotPrimary(f"{self.node.name} is not the primary of the current view")
        if len(self._queue) >= self.limits.inflight_commands_max:
            raise Unavailable("too many writes in flight")
        stalled = self.stalled_since
        if stalled is not None and time.monotonic() - stalled > self.limits.stall_ms_max / 1000:
            # Definite: the command is not queued, so it can never run later on its own.
            raise Refused("a backup is unreachable; writes wait for it")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((command, future))
        self._wakeup.set()
        return await asyncio.shield(future)

    async def _batch_loop(self) -> None:
        while not self._stopping:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[: self.limits.batch_commands_max]
                del self._queue[: len(batch)]
                await self._run_batch(batch)
            if self.core.role == "primary" and self.core.backups():
                self.spawn(self._notify_commit(), "commit-notice")

    async def _run_batch(self, batch: list[tuple[C, asyncio.Future[R]]]) -> None:
        commands = [command for command, _ in batch]
        try:
            async with self._lock:
                results = await self._execute(commands)
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(Unavailable("the replica is stopping"))
            raise
        except Exception as error:
            failure = error if isinstance(error, NotPrimary | Unavailable | Refused) else None
            if failure is None:
                log.exception("batch failed")
                failure = Unavailable("the write could not be completed")
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _execute(self, commands: list[C]) -> list[R]:
        core = self.core
        if core.role != "primary":
            raise NotPrimary(f"{self.node.name} is no longer the primary")
        version = (core.epoch, core.next_seq())
        entry, results = await self.store.write(
            partial(begin_batch, machine=self.machine, commands=commands, version=version)
        )
        if entry is None:
            return results
        try:
            async with asyncio.TaskGroup() as group:  # both must finish before the COMMIT
                group.create_task(self._replicate(entry))
                if self.before_commit is not None:
                    group.create_task(self.before_commit(entry))
        except BaseException as error:
            # The entry may be staged on some backups: this primary must never write another
            # entry at the same (epoch, seq), so it steps down until the view manager gives it
            # a new epoch (replica rule 4).
            try:
                await asyncio.shield(self.store.write(rollback_batch))
            finally:
                self.invalidating = None
                core.step_down()
            log.warning(
                "transition=step_down tier=%s node=%s epoch=%d seq=%d reason=%s",
                self.node.tier,
                self.node.name,
                entry.epoch,
                entry.seq,
                type(error).__name__,
            )
            if isinstance(error, BaseExceptionGroup) and error.subgroup(Deposed) is not None:
                raise Unavailable("this primary was deposed; retry") from None
            raise
        finally:
            self.stalled_since = None
        try:
            await self.store.write(commit_batch)
        except Exception:
            # Whether the entry is on disk is unknown, and memory cannot be made to agree:
            # restart from the disk (the supervisor does it; the boot epoch rule then forces
            # a new epoch, so this (epoch, seq) is never written again).
            log.critical("transition=exit reason=commit_failed seq=%d", entry.seq, exc_info=True)
            os._exit(1)
        finally:
            self.invalidating = None
        core.on_commit(entry)
        return results

    async def _replicate(self, entry: Entry) -> None:
        """Return once every backup of the view has staged `entry`.

        Raises: Deposed.
        """
        async with asyncio.TaskGroup() as group:
            for name in self.core.backups():
                group.create_task(self._replicate_to(name, entry))

    async def _replicate_to(self, backup: str, entry: Entry) -> None:
        url = self.view_of(self.node.tier).url_of(backup) + "/internal/append"
        entries, prev_epoch = [entry], self.core.commit_epoch
        failing = False
        while True:
            message = self.core.append_for(entries, prev_epoch)
            try:
                reply = await self.transport.call(
                    "POST",
                    url,
                    AppendReply,
                    body=message,
                    timeout_ms=self.limits.replicate_timeout_ms,
                )
            except TransportError as error:
                if not failing:
                    log.warning("transition=backup_unreachable node=%s error=%s", backup, error)
                    failing = True
                self.note_stall()
                await asyncio.sleep(self.limits.replicate_retry_ms / 1000)
                continue
            if failing:
                log.info("transition=backup_reachable node=%s", backup)
                failing = False
            verdict = self.core.on_append_reply(backup, entry.seq, reply)
            if verdict == "acked":
                return
            if verdict == "deposed":
                raise Deposed()
            entries, prev_epoch = self._catch_up_entries(backup, entry)

    def note_stall(self) -> None:
        """The batch in flight waits for a peer that does not answer (a backup, or the front
        end for an invalidation). Past `stall_ms_max`, new writes are refused and so are the
        queued ones: none of them has been executed, so the refusal is definite."""
        now = time.monotonic()
        if self.stalled_since is None:
            self.stalled_since = now
        elif now - self.stalled_since > self.limits.stall_ms_max / 1000 and self._queue:
            queued, self._queue = self._queue, []
            for _, future in queued:
                if not future.done():
                    future.set_exception(Refused("a peer is unreachable; writes wait for it"))

    def _catch_up_entries(self, backup: str, entry: Entry) -> tuple[list[Entry], int]:
        first = self.core.resend_from(backup)
        assert first <= entry.seq
        limit = self.limits.catch_up_entries_max
        older = self.store.read_log(max(first - 1, 1), entry.seq - 1, limit=limit + 1)
        prev_epoch = 0
        if older and older[0].seq == first - 1:
            prev_epoch = older[0].epoch
            older = older[1:]
        if len(older) > limit - 1:
            return older[:limit], prev_epoch
        return [*older, entry], prev_epoch

    async def _notify_commit(self) -> None:
        """Tell idle backups the commit point, so their reads need not ask us. Under load the
        next Append carries it, so the notice waits a moment and gives way to a newer batch."""
        commit_seq = self.core.commit_seq
        await asyncio.sleep(self.limits.commit_notice_delay_ms / 1000)
        if self.core.role != "primary" or self.core.commit_seq != commit_seq or self._queue:
            return
        message = self.core.heartbeat_append()
        view = self.view_of(self.node.tier)
        for name in view.backups:
            with contextlib.suppress(TransportError, BazarError):
                await self.transport.call(
                    "POST",
                    view.url_of(name) + "/internal/append",
                    AppendReply,
                    body=message,
                    timeout_ms=self.limits.replicate_timeout_ms,
                )

    # ---------------------------------------------------------------- backup side

    async def on_append(self, message: Append) -> AppendReply:
        async with self._lock:
            if self.core.role == "primary" and message.epoch <= self.core.epoch:
                return AppendReply(
                    status="stale_epoch",
                    epoch=self.core.epoch,
                    last_seq=self.core.last_seq,
                    commit_seq=self.core.commit_seq,
                )
            plan = self.core.plan_append(message)
            await self._persist(plan)
            return plan.reply

    async def _persist(self, plan: AppendPlan) -> None:
        core = self.core
        if plan.writes or plan.epoch != core.epoch or plan.commit_seq != core.commit_seq:
            await self.store.write(
                partial(
                    stage_entries,
                    tables=self.store.tables,
                    epoch=plan.epoch,
                    truncate_from=plan.truncate_from,
                    entries=plan.stage,
                    apply=plan.apply,
                    commit_seq=plan.commit_seq,
                )
            )
        core.on_persisted(plan)

    # ---------------------------------------------------------------- reads

    def readable(self) -> None:
        """Raises: Unavailable when this replica may not serve reads (no role in a view)."""
        if self.core.role == "none":
            raise Unavailable(f"{self.node.name} is not serving reads")

    def commit_point(self) -> CommitPoint:
        """The locally committed position, read from the database: on a primary a reader can
        only have seen data up to this point (same snapshot rule as every read)."""
        row = self.store.reader.execute(
            "SELECT value FROM meta WHERE key = 'commit_seq'"
        ).fetchone()
        return CommitPoint(epoch=self.core.epoch, commit_seq=int(row[0]))

    async def committed_overlay(self, table: str, keys: set[int | str] | None) -> list[Entry]:
        """Staged entries that the primary has committed and that touch `keys` of `table`
        (any key when None): the CRAQ rule that keeps backup reads linearizable.

        Raises: Unavailable when the primary cannot be asked.
        """
        dirty = self.core.dirty(self.store.tables, table)
        if not dirty or (keys is not None and not (dirty & keys)):
            return []
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
                timeout_ms=self.limits.read_timeout_ms,
            )
        except (TransportError, NotPrimary) as error:
            raise Unavailable(f"cannot check a pending write with the primary: {error}") from None
        if self.core.truncations != truncations:
            # A newer primary replaced staged entries while we waited: the snapshot may hold
            # one that will never commit. Let the front end ask another replica.
            raise Unavailable("the log changed during the read; retry")
        return [entry for entry in staged if entry.seq <= point.commit_seq]
