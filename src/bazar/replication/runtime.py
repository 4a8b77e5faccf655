"""The replication runtime: asyncio, HTTP and the writer thread around the one driver.

Every event (a tick, an Append, a reply, a lease answer, a batch) is one step of the driver
(`driver.py`) under one lock: `decide` on the event loop, `persist` on the writer thread (the
loop never waits for an fsync), `complete` back on the loop. Each send it makes ends in
another step (its reply or its failure). Nothing here decides: the core does, through the
driver; this module only moves bytes and wakes tasks.

Write path on the primary (one batch in flight; requests that arrive meanwhile form the next
batch, which is the group commit that gives throughput): the batch's commands run in one
open SQLite transaction that logs one entry; the core sends it to every backup of the view
and says when to COMMIT (`CommitBatch`) or ROLLBACK (`AbortBatch`). Readers never see the
batch before its COMMIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Generic, TypeVar

from bazar.clock import monotonic_ms
from bazar.config import Cluster, Node
from bazar.errors import BazarError, Unavailable
from bazar.replication.driver import Driver, boot
from bazar.replication.metrics import ReplicaMetrics
from bazar.replication.ready import Ready, Send, SnapshotWanted, Stage
from bazar.replication.replica import Notify, Replica, Timing
from bazar.replication.storage import Store
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
    """One replica of one tier: its driver, and the tasks that carry its traffic. It is the
    driver's `Host` (`now_ms`, `transmit`, `settle`, `reply`, `log`)."""

    def __init__(
        self,
        *,
        cluster: Cluster,
        node: Node,
        store: Store,
        transport: Transport,
        metrics: ReplicaMetrics,
        notify: Notify | None = None,
    ) -> None:
        self.cluster = cluster
        self.limits = cluster.limits
        self.node = node
        self.store = store
        self.transport = transport
        self.metrics = metrics
        core = boot(
            store,
            name=node.name,
            tier=node.tier,
            pid=os.getpid(),
            incarnation=uuid.uuid4().hex,
            timing=timing_of(cluster),
            notify=notify,
        )
        self.driver: Driver[C, R, asyncio.Future[Any]] = Driver(
            core,
            store,
            self,
            batch_commands_max=self.limits.batch_commands_max,
            queued_max=self.limits.inflight_commands_max,
        )
        self.urls: dict[str, str] = {}
        self.primary_changed: dict[str, asyncio.Event] = {}
        self._primaries: dict[str, str] = {}
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.isolated_from_frontend = False  # a test hook: a network cut to the front end
        self._snapshot_lock = asyncio.Lock()

    @property
    def core(self) -> Replica:
        """The driver's core (one place holds it)."""
        return self.driver.core

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
        self.driver.stop()

    def spawn(self, coroutine: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.limits.tick_ms / 1000)
            await self.step(self.core.tick)

    # ---------------------------------------------------------------- the driver's host

    def now_ms(self) -> int:
        return monotonic_ms()

    def transmit(self, send: Send) -> None:
        self.spawn(self._send(send), "send")

    def settle(
        self, handle: asyncio.Future[Any], result: R | None, error: BazarError | None
    ) -> None:
        if handle.done():
            return
        if error is not None:
            handle.set_exception(error)
        else:
            handle.set_result(result)

    def reply(self, handle: asyncio.Future[Any], reply: AppendReply) -> None:
        if not handle.done():
            handle.set_result(reply)

    def log(self, line: str) -> None:
        log.info(line)

    # ---------------------------------------------------------------- steps

    async def step(
        self, event: Callable[[int], Ready], reply_to: asyncio.Future[Any] | None = None
    ) -> None:
        """One driver step: decide, persist (writer thread), complete."""
        driver = self.driver
        async with self._lock:
            ready = driver.decide(event, reply_to)
            await self._persist(ready)
            driver.complete(ready, reply_to)
        self._after_step()

    async def _persist(self, ready: Ready) -> None:
        if not ready.persist:
            return
        driver = self.driver
        try:
            # Shielded: once on the writer thread, a step finishes whoever stops waiting.
            await asyncio.shield(self.store.write(lambda _conn: driver.persist(ready)))
        except Exception:
            if driver.unwind(ready):
                # Whether the COMMIT (or ROLLBACK) is on disk is unknown, and memory cannot
                # be made to agree: restart from the disk (the supervisor does it).
                log.critical("transition=exit reason=persist_failed", exc_info=True)
                os._exit(1)
            raise
        for effect in ready.persist:
            if isinstance(effect, Stage) and effect.stage:
                self.metrics.stage_entries.observe(len(effect.stage))

    def _after_step(self) -> None:
        if self.driver.queue:
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
        if isinstance(message, SnapshotWanted):
            await self._send_snapshot(send.to, message)
            return
        answer: object | None = None
        try:
            answer = await self._call(send)
        except (TransportError, BazarError) as error:
            if isinstance(message, Invalidate):
                log.warning("transition=frontend_unreachable error=%s", error)
        await self.step(self.driver.answered(send, answer))

    async def _call(self, send: Send) -> object:
        """Raises: TransportError, BazarError."""
        message = send.message
        limits = self.limits
        if isinstance(message, LeaseRequest | Invalidate):
            if self.isolated_from_frontend:
                raise TransportError("isolated from the front end (test hook)", definite=False)
            lease = isinstance(message, LeaseRequest)
            return await self.transport.call(
                "POST",
                self.cluster.frontend.url
                + ("/internal/lease" if lease else "/internal/invalidate"),
                LeaseReply if lease else InvalidateReply,
                body=message,
                timeout_ms=limits.lease_timeout_ms if lease else limits.read_timeout_ms,
            )
        assert isinstance(message, Append)
        return await self.transport.call(
            "POST",
            self._url_of(send.to) + "/internal/append",
            AppendReply,
            body=message,
            timeout_ms=limits.replicate_timeout_ms,
        )

    def _url_of(self, peer: str) -> str:
        """Raises: Unavailable."""
        url = self.urls.get(peer)
        if url is None:
            raise Unavailable(f"no address for {peer}")
        return url

    async def _send_snapshot(self, peer: str, wanted: SnapshotWanted) -> None:
        answer: AppendReply | None = None
        header: Snapshot | None = None
        try:
            url = self._url_of(peer)
            made, data = await asyncio.to_thread(self.driver.snapshot_for, wanted)
            header = made
            log.info(
                "transition=snapshot_sent node=%s commit_seq=%d bytes=%d",
                peer,
                made.commit_seq,
                len(data),
            )
            answer = await self.transport.call(
                "POST",
                url + "/internal/snapshot",
                AppendReply,
                raw=data,
                headers={SNAPSHOT_HEADER: encode(made).decode()},
                timeout_ms=self.limits.snapshot_timeout_ms,
            )
        except (TransportError, BazarError, OSError):
            answer = None
        await self.step(self.driver.snapshot_answered(peer, header, answer))

    async def on_snapshot(self, header: Snapshot, data: bytes) -> AppendReply:
        async with self._snapshot_lock:  # one snapshot at a time: the step takes its bytes
            return await self._replied(self.driver.on_snapshot(header, data))

    async def on_append(self, message: Append) -> AppendReply:
        return await self._replied(partial(self.core.on_append, message))

    async def _replied(self, event: Callable[[int], Ready]) -> AppendReply:
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.step(event, answer)
        reply = answer.result()
        assert isinstance(reply, AppendReply)
        return reply

    # ---------------------------------------------------------------- writes (primary)

    async def submit(self, command: C) -> R:
        """Execute one command through the replicated log and return its result.

        Raises: NotPrimary, Refused (definitely not executed), Unavailable, Abandoned.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.driver.submit(command, future)
        self._wakeup.set()
        result: R = await asyncio.shield(future)
        return result

    def check_writable(self) -> None:
        """Raises: NotPrimary, Refused (both definite)."""
        self.driver.check_writable()

    async def _batch_loop(self) -> None:
        try:
            while not self._stopping:
                await self._wakeup.wait()
                self._wakeup.clear()
                while await self._run_batch():
                    pass
        except Exception:
            # A bug, with perhaps a batch transaction left open: nothing could be written
            # again. Restart from the disk (the supervisor does it) rather than limp on.
            log.critical("transition=exit reason=batch_loop_failed", exc_info=True)
            os._exit(1)

    async def _run_batch(self) -> bool:
        """Start the next batch if the driver has one; False when there is none now."""
        driver = self.driver
        async with self._lock:
            taken = driver.take_batch()
            if taken is None:
                return False
            try:
                entry, results = await self.store.write(lambda _conn: driver.begin(taken))
            except Exception:
                log.exception("batch failed")
                driver.fail_batch(taken, Unavailable("the write could not be executed"))
                return True
            ready = driver.propose(taken, entry, results)
            if ready is None:
                return True
            assert entry is not None
            self.metrics.batch_commands.observe(len(taken))
            await self._persist(ready)
            driver.complete(ready)
            if driver.intent_due(entry):
                # Our own fsync, on the writer thread while the Appends travel; the batch's
                # COMMIT queues behind it there (storage.IntentLog).
                self.spawn(
                    self._write_intent(
                        self.store.write(lambda _conn: driver.write_intent(entry)), entry
                    ),
                    "intent",
                )
        self._after_step()
        return True

    async def _write_intent(self, written: Awaitable[None], entry: Entry) -> None:
        try:
            await written
        except Exception:
            log.warning("the intent of seq %d was not written; its commit syncs", entry.seq)

    def queued(self) -> int:
        """Writes waiting for the next batch."""
        return len(self.driver.queue)

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
        """Raises: Unavailable (`Driver.check_readable`)."""
        self.driver.check_readable()

    def commit_point_for_backups(self) -> CommitPoint:
        """`GET /internal/commit`. Raises: Unavailable."""
        return self.driver.commit_point_for_backups()

    def commit_point(self) -> CommitPoint:
        return self.store.commit_point()

    async def committed_overlay(self, table: str, keys: set[int | str] | None) -> list[Entry]:
        """Staged entries that the primary has committed and that touch `keys` of `table`
        (any key when None): the CRAQ rule that keeps backup reads linearizable.

        Raises: Unavailable when the primary cannot be asked.
        """
        check = self.driver.read_check(table, keys)
        if check is None:
            return []
        view = check.view
        try:
            point = await self.transport.call(
                "GET",
                view.url_of(view.primary) + "/internal/commit",
                CommitPoint,
                timeout_ms=self.limits.commit_check_timeout_ms,
            )
        except (TransportError, BazarError) as error:
            raise Unavailable(f"cannot check a pending write with the primary: {error}") from None
        return self.driver.read_checked(check, point)
