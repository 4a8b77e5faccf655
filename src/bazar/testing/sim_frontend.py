"""The simulated front end: the view manager (`core.view.ViewManager`) applied as
`frontend/service.py` applies it, and the routing of the clients' reads and writes.

Why it mirrors `frontend.py` line by line: the view manager's safety rests on its adapter
(persist a new view, compare-and-set on the epoch, before installing and announcing it), and
the clients' guarantees on the routing (writes to the current view's primary, given up when
the view changes; reads over the view's replicas, in-sync ones first, round after round
until a deadline).

The read cache is the production one (`frontend/cache.py`): a read is answered from it
when it holds the book, and a backend's answer fills it under the ticket taken as the read
started; the catalog primary's invalidations and its lease requests keep it fresh, as they
do `frontend/service.py`'s.

A crash drops the manager, the cache, the routing state and every call in flight; the
persisted views survive, and a restart builds a new `ViewManager` with `booted_ms` = now
(rule 7) and an empty cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bazar.frontend.balancer import RoundRobin
from bazar.frontend.cache import Cache, book_key
from bazar.frontend.views import Leases, ViewManager
from bazar.replication.ready import FRONTEND
from bazar.testing.sim_network import Call, Failure, Host, Loop, Network
from bazar.testing.sim_replica import TIER, ReadReply, ReadRequest, SimLimits, WriteRequest
from bazar.testing.sim_store import Buy, Command, Outcome
from bazar.wire import Invalidate, InvalidateReply, LeaseReply, LeaseRequest, View

CACHE_ENTRIES_MAX = 2  # fewer than the books, so that evictions happen too
CACHE_TTL_MS = 60_000


@dataclass(frozen=True, slots=True)
class ClientRead:
    book_id: int


@dataclass(frozen=True, slots=True)
class ClientWrite:
    command: Command


@dataclass(slots=True)
class WriteOp:
    """A client's write in progress (`Frontend._write`). Every write is keyed (a purchase by
    its key, a restock as an admin update under the key the front end gives it), so an
    attempt that a failover gave up may be sent again (`transport.write_retry`)."""

    client: Call
    command: Command
    tier: str
    deadline_ms: int
    failovers: int = 0  # the tier's failover count when the attempt started
    backend: Call | None = None
    wake: int = 0  # bumped to cancel a pending wake-up


@dataclass(slots=True)
class ReadOp:
    """A client's read in progress (`Frontend._read`)."""

    client: Call
    book_id: int
    deadline_ms: int
    ticket: bool
    order: list[str] = field(default_factory=list)
    view: View | None = None


class FrontendNode:
    """The front end process and its views file."""

    def __init__(
        self,
        *,
        loop: Loop,
        network: Network,
        trace: Callable[[str], None],
        on_install: Callable[[View, View], None],
        limits: SimLimits,
        leases: Leases,
        views: dict[str, View],
        cache: bool,
        unsafe_fill_stale: bool = False,
    ) -> None:
        self.loop = loop
        self.host: Host = loop.hosts[FRONTEND]
        self.network = network
        self.trace = trace
        self.on_install = on_install
        self.limits = limits
        self.leases = leases
        self.stored = dict(views)  # the views file: durable
        self.manager: ViewManager | None = None
        self.cache_enabled = cache
        self.unsafe_fill_stale = unsafe_fill_stale
        self.cache = self._new_cache()
        self.balancer = RoundRobin()
        self.failed_until_ms: dict[str, int] = {}
        self.writes: dict[int, WriteOp] = {}  # by client call
        self.failovers = dict.fromkeys(views, 0)  # primary changes installed, per tier
        self.serving_calls: dict[int, Call] = {}
        network.handlers[FRONTEND] = self.handle

    def now(self) -> int:
        return self.host.clock(self.loop.now_ms)

    def live(self) -> ViewManager:
        assert self.manager is not None
        return self.manager

    def view(self, tier: str = TIER) -> View | None:
        return None if self.manager is None else self.manager.views[tier]

    # ---------------------------------------------------------------- lifecycle

    def boot(self) -> None:
        self.manager = ViewManager(dict(self.stored), booted_ms=self.now(), leases=self.leases)
        self.cache = self._new_cache()
        self.balancer = RoundRobin()
        self.failed_until_ms = {}
        self._arm_tick()

    def _new_cache(self) -> Cache:
        cache = Cache(entries_max=CACHE_ENTRIES_MAX, ttl_ms=CACHE_TTL_MS)
        cache.unsafe_fill_stale = self.unsafe_fill_stale
        return cache

    def crash(self) -> None:
        host = self.host
        host.up = False
        host.paused = False
        host.incarnation += 1
        self.manager = None
        calls = list(self.serving_calls.values())
        self.serving_calls.clear()
        self.writes.clear()
        for call in calls:
            self.network.reply(call, Failure("reset"))
        self.loop.release(host)

    def restart(self) -> None:
        assert not self.host.up
        self.host.up = True
        self.boot()

    def _arm_tick(self) -> None:
        self.loop.timer(self.host, self.limits.view_tick_ms, self._tick)

    def _tick(self) -> None:
        """`_tick_loop`: drop expired replicas, promote backups."""
        for view in self.live().tick(self.now()).install:
            self.install(view)
        self._arm_tick()

    def install(self, view: View) -> None:
        """Persist (compare-and-set on the epoch), then install; writes in flight to the
        tier are given up (`unless_changed`)."""
        manager = self.live()
        expected = manager.views[view.tier].epoch
        if self.stored[view.tier].epoch != expected:
            raise RuntimeError(f"the stored {view.tier} view moved past epoch {expected}")
        old = self.stored[view.tier]
        self.stored[view.tier] = view
        manager.install(view)
        self.on_install(old, view)
        self.trace(
            f"transition=view tier={view.tier} epoch={view.epoch} primary={view.primary} "
            f"backups={','.join(view.backups) or '-'}"
        )
        if view.primary == old.primary:
            return
        if view.tier == TIER:
            self.cache.primary_changed()
        self.failovers[view.tier] += 1
        for op in list(self.writes.values()):
            if op.tier != view.tier:
                continue
            backend = op.backend
            if backend is None:
                op.wake += 1
                self._write_attempt(op)  # it was waiting for the failover
            elif not backend.done:
                backend.done = True  # given up (`unless_changed`): its answer is ignored
                self._write_answer(op, Failure("failover"))

    # ---------------------------------------------------------------- requests

    def handle(self, call: Call) -> None:
        request = call.request
        if isinstance(request, LeaseRequest):
            self._lease(call, request)
            return
        if isinstance(request, Invalidate):
            dropped = self.cache.invalidate_once(request.books, request.version)
            self.network.reply(call, InvalidateReply(dropped=dropped))
            return
        self.serving_calls[call.ident] = call
        if isinstance(request, ClientWrite):
            self._write(call, request.command)
        else:
            assert isinstance(request, ClientRead), request
            self._read(call, request.book_id)

    def _answer(self, call: Call, answer: object) -> None:
        if self.serving_calls.pop(call.ident, None) is not None:
            self.network.reply(call, answer)

    def _lease(self, call: Call, request: LeaseRequest) -> None:
        """`Frontend._lease`."""
        manager = self.live()
        ready = manager.on_lease(request, self.now())
        for view in ready.install:
            self.install(view)
        granted = ready.granted
        if granted:
            self.cache.heard_primary(request.status, manager.views[TIER])
        self.network.reply(call, LeaseReply(views=dict(manager.views), granted=granted))

    def _write(self, client: Call, command: Command) -> None:
        """`Frontend._write`: to the current primary, retried on a definite refusal (and,
        for a keyed write, after a failover gave it up) until `write_retry_deadline_ms`."""
        deadline_ms = self.now() + self.limits.write_retry_deadline_ms
        # Purchases go to the order tier when there is one (it sells at the catalog).
        tier = "order" if isinstance(command, Buy) and "order" in self.stored else TIER
        op = WriteOp(client, command, tier, deadline_ms)
        self.writes[client.ident] = op
        self._write_attempt(op)

    def _write_attempt(self, op: WriteOp) -> None:
        """`Frontend._write_once`."""
        view = self.live().views[op.tier]
        op.failovers = self.failovers[op.tier]
        op.backend = self.network.call(
            FRONTEND,
            view.primary,
            WriteRequest(op.command),
            self.limits.write_timeout_ms,
            lambda answer: self._write_answer(op, answer),
        )

    def _write_answer(self, op: WriteOp, answer: object) -> None:
        op.backend = None
        if isinstance(answer, Outcome):
            self._write_done(op, answer)
            return
        assert isinstance(answer, Failure), answer
        failover = self.failovers[op.tier] != op.failovers
        decision = answer.retry(failover)
        retry = decision is not None and decision.again and self.now() < op.deadline_ms
        if not retry:
            self._write_done(op, Failure("unavailable"))
        elif failover:
            self._write_attempt(op)
        else:
            op.wake += 1
            wake = op.wake
            self.loop.timer(self.host, self.limits.retry_ms, lambda: self._write_wake(op, wake))

    def _write_wake(self, op: WriteOp, wake: int) -> None:
        if op.wake == wake and op.backend is None and op.client.ident in self.writes:
            self._write_attempt(op)

    def _write_done(self, op: WriteOp, answer: object) -> None:
        self.writes.pop(op.client.ident, None)
        op.wake += 1
        self._answer(op.client, answer)

    # ---------------------------------------------------------------- reads

    def _read(self, client: Call, book_id: int) -> None:
        """`Frontend._info`: from the cache, else from a replica, filling the cache."""
        key = book_key(book_id)
        body = self.cache.get(key, self.now()) if self.cache_enabled else None
        if body is not None:
            self.trace(f"cache=hit book={book_id}")
            self._answer(client, decode_reply(body))
            return
        deadline_ms = self.now() + self.limits.read_deadline_ms
        self._read_round(ReadOp(client, book_id, deadline_ms, self.cache.ticket()))

    def _read_round(self, op: ReadOp) -> None:
        """`Frontend._read_round`: in-sync replicas first (round robin), then the rest."""
        manager = self.live()
        now = self.now()
        view = manager.views[TIER]
        members = [view.primary, *view.backups]
        in_sync = manager.in_sync(TIER, now)
        healthy = [name for name in in_sync if self.failed_until_ms.get(name, 0) <= now]
        others = [name for name in members if name not in healthy]
        op.order = self.balancer.order(healthy, others)
        op.view = view
        self._read_next(op)

    def _read_next(self, op: ReadOp) -> None:
        if not op.order:
            if self.now() >= op.deadline_ms:
                self._answer(op.client, Failure("unavailable", definite=True))
                return
            self.loop.timer(self.host, self.limits.retry_ms, lambda: self._read_round(op))
            return
        name = op.order.pop(0)
        self.network.call(
            FRONTEND,
            name,
            ReadRequest(op.book_id),
            self.limits.read_timeout_ms,
            lambda answer: self._read_answer(op, name, answer),
        )

    def _read_answer(self, op: ReadOp, name: str, answer: object) -> None:
        if isinstance(answer, ReadReply):
            if self.cache_enabled:
                key, body = book_key(op.book_id), encode_reply(answer)
                self.cache.fill(key, body, answer.version, (op.book_id,), self.now(), op.ticket)
            self._answer(op.client, answer)
            return
        assert isinstance(answer, Failure), answer
        if answer.transport:  # unreachable: tried last for a while
            self.failed_until_ms[name] = self.now() + self.limits.read_timeout_ms
        self._read_next(op)


def encode_reply(reply: ReadReply) -> bytes:
    """What the cache stores (the service stores the encoded response)."""
    return f"{reply.stock} {reply.version[0]} {reply.version[1]}".encode()


def decode_reply(body: bytes) -> ReadReply:
    stock, epoch, seq = (int(part) for part in body.split())
    return ReadReply(stock=stock, version=(epoch, seq))
