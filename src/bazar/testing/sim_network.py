"""The simulator's time and network: one event heap, per-process clocks, and HTTP calls as
request and response messages that the network drops, delays, duplicates and cuts.

Why a single heap: every decision of a simulated run (which message arrives first, when a
timer fires, where a fault lands) is an event popped in `(time_ms, seq)` order, with `seq` a
global counter, so a seed replays exactly and payloads are never compared
(docs/testing.md §2).

Rules:
1. An event may be bound to a process (`host`). Bound to an incarnation too (timers,
   answers to calls the process made), it dies with that incarnation (a crash). Events
   bound to a paused process are held until it resumes (SIGSTOP: time runs, nothing runs).
2. A call is a request and a response. Each is dropped (loss, or a cut link at sending or
   at arrival), delayed (`min + expovariate`, so messages reorder; a clogged link holds
   them until it unclogs, as TCP retransmits through an outage) or duplicated. The
   caller's timeout is a timer of its own incarnation; the first answer or the timeout
   completes the call exactly once, later answers are ignored (as aiohttp drops them).
3. A request to a process that is down is refused (the answer is a `Failure`); a process
   that crashes resets the calls it was serving (`reset`), and the caller hears it only if
   the link lets the answer through.
4. Clocks: a process sees `offset + floor(now * rate)`; rates drift by less than the lease
   margin assumes, so a lease measured on one clock ends before another clock's expiry.
   Timers fire up to `jitter_ms_max` late, as an event loop's do.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bazar.retry import Retry, write_retry

Action = Callable[[], None]
STEPS_MAX = 1_000_000  # a run is about 3,000 steps: this many means events feed themselves
Done = Callable[[object], None]

TRANSPORT_REASONS = ("timeout", "refused", "reset")


@dataclass(frozen=True, slots=True)
class Failure:
    """A call that ended without an answer (`timeout`, `refused`, `reset`: transport
    errors) or with an error answer from the callee (any other reason). `definite`: the
    callee certainly did not execute it."""

    reason: str
    definite: bool = False

    @property
    def transport(self) -> bool:
        return self.reason in TRANSPORT_REASONS

    def retry(self, failover: bool) -> Retry | None:
        """The production write-retry rule (`transport.write_retry`) for this failure of a
        keyed write; None when it is an answer (the caller hears it)."""
        if self.reason in ("not_primary", "refused"):  # NotPrimary, Refused
            return write_retry("refused", definite=True, failover=failover)
        if self.reason == "abandoned":  # Abandoned
            return write_retry("abandoned", definite=False, failover=failover)
        if self.transport or self.reason == "failover":  # TransportError (or given up)
            return write_retry("lost", definite=self.definite, failover=failover)
        return None


@dataclass(slots=True)
class Host:
    """What the loop knows of a process: whether it runs, which incarnation, its clock."""

    name: str
    rate: float = 1.0
    offset_ms: int = 0
    incarnation: int = 0
    up: bool = True
    paused: bool = False
    held: list[tuple[int | None, Action]] = field(default_factory=list)

    def clock(self, now_ms: int) -> int:
        return self.offset_ms + math.floor(now_ms * self.rate)

    def real_ms(self, local_ms: int) -> int:
        """Real time that `local_ms` of this process's clock take (at least 1 ms)."""
        return max(1, math.ceil(local_ms / self.rate))


class Runaway(Exception):
    """More than `STEPS_MAX` events: something keeps scheduling itself."""


class Loop:
    """The event heap and simulated time."""

    def __init__(self, jitter: random.Random | None = None, jitter_ms_max: int = 0) -> None:
        self.now_ms = 0
        self.steps = 0
        self.jitter = jitter
        self.jitter_ms_max = jitter_ms_max
        self.hosts: dict[str, Host] = {}
        self._heap: list[tuple[int, int, str | None, int | None, Action]] = []
        self._seq = 0

    def at(self, time_ms: int, host: str | None, incarnation: int | None, action: Action) -> None:
        assert time_ms >= self.now_ms
        self._seq += 1
        heapq.heappush(self._heap, (time_ms, self._seq, host, incarnation, action))

    def after(
        self, delay_ms: int, host: str | None, incarnation: int | None, action: Action
    ) -> None:
        assert delay_ms >= 0
        self.at(self.now_ms + delay_ms, host, incarnation, action)

    def timer(self, host: Host, local_ms: int, action: Action) -> None:
        """Run `action` after `local_ms` of the host's clock (plus the scheduler's jitter,
        which keeps periodic timers from staying in phase), unless it crashes first."""
        slack_ms = self.jitter.randint(0, self.jitter_ms_max) if self.jitter else 0
        self.after(host.real_ms(local_ms) + slack_ms, host.name, host.incarnation, action)

    def run(self, end_ms: int, stop: Callable[[], bool] | None = None) -> bool:
        """Run events up to `end_ms`; returns True when `stop()` became true (checked after
        every event), leaving the clock at that event."""
        heap = self._heap
        while heap and heap[0][0] <= end_ms:
            time_ms, _, name, incarnation, action = heapq.heappop(heap)
            self.now_ms = time_ms
            if name is not None:
                host = self.hosts[name]
                if incarnation is not None and (incarnation != host.incarnation or not host.up):
                    continue
                if host.paused:
                    host.held.append((incarnation, action))
                    continue
            self.steps += 1
            if self.steps > STEPS_MAX:
                raise Runaway(f"{self.steps} steps by {self.now_ms} ms")
            action()
            if stop is not None and stop():
                return True
        self.now_ms = max(self.now_ms, end_ms)
        return False

    def release(self, host: Host) -> None:
        """Resume (or crash) a held host: its held events run now, in their order; those of
        a dead incarnation are skipped when popped."""
        held, host.held = host.held, []
        for incarnation, action in held:
            self.after(0, host.name, incarnation, action)


@dataclass(slots=True)
class Call:
    """One HTTP call in flight."""

    ident: int
    src: str
    incarnation: int
    dst: str
    request: object
    on_done: Done
    done: bool = False


@dataclass(slots=True)
class Weather:
    """The network's current faults (the liveness phase clears them)."""

    loss: float = 0.0
    duplicate: float = 0.0
    delay_min_ms: int = 1
    delay_mean_ms: float = 2.0


Handler = Callable[[Call], None]


class Network:
    """Calls between processes, through `Weather` and cut links."""

    def __init__(
        self, loop: Loop, rng: random.Random, weather: Weather, reliable: Iterable[str]
    ) -> None:
        self.loop = loop
        self.rng = rng
        self.weather = weather
        self.reliable = frozenset(reliable)  # clients: their links to the front end never fail
        self.handlers: dict[str, Handler] = {}
        self.cuts: Counter[tuple[str, str]] = Counter()
        self.clogs: dict[tuple[str, str], int] = {}  # link -> time its messages are released
        self._calls = 0

    def blocked(self, src: str, dst: str) -> bool:
        return self.cuts[(src, dst)] > 0

    def call(self, src: str, dst: str, request: object, timeout_ms: int, on_done: Done) -> Call:
        """Send `request`; `on_done` gets the answer or a `Failure`, exactly once, unless
        the caller's incarnation dies first."""
        host = self.loop.hosts[src]
        assert host.up
        self._calls += 1
        call = Call(self._calls, src, host.incarnation, dst, request, on_done)
        self.loop.timer(host, timeout_ms, lambda: self.finish(call, Failure("timeout")))
        self._transmit(src, dst, dst, None, lambda: self._deliver(call))
        return call

    def reply(self, call: Call, answer: object) -> None:
        """The callee answers (or a crashed callee resets the connection)."""
        self._transmit(
            call.dst, call.src, call.src, call.incarnation, lambda: self.finish(call, answer)
        )

    def finish(self, call: Call, answer: object) -> None:
        if call.done:
            return
        call.done = True
        call.on_done(answer)

    def _deliver(self, call: Call) -> None:
        if not self.loop.hosts[call.dst].up:
            self.reply(call, Failure("refused", definite=True))
            return
        self.handlers[call.dst](call)

    def _transmit(
        self, src: str, dst: str, host: str, incarnation: int | None, action: Action
    ) -> None:
        weather = self.weather
        if src in self.reliable or dst in self.reliable or src == dst:
            self.loop.after(1, host, incarnation, action)
            return
        if self.blocked(src, dst) or self.rng.random() < weather.loss:
            return
        copies = 2 if self.rng.random() < weather.duplicate else 1
        held_ms = max(0, self.clogs.get((src, dst), 0) - self.loop.now_ms)
        for _ in range(copies):
            delay = weather.delay_min_ms + int(self.rng.expovariate(1 / weather.delay_mean_ms))
            self.loop.after(
                held_ms + delay, host, incarnation, lambda: self._arrive(src, dst, action)
            )

    def _arrive(self, src: str, dst: str, action: Action) -> None:
        if not self.blocked(src, dst):
            action()
