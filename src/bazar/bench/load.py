"""The load generator: closed-loop workers in P processes, so that the client is not what limits.

Closed loop (N workers, each sending its next request only when the previous one answered)
because that is how the lab's clients behave and it cannot overload the server into measuring
its own queues. Each load process (multiprocessing, `spawn`: a fresh interpreter, nothing
inherited) runs its share of the workers on its own event loop (uvloop, as the servers) with
one aiohttp session with keep-alive, so we measure the service and not TCP handshakes.

Rules:
1. One clock for all: `time.monotonic_ns` (CLOCK_MONOTONIC is system-wide), so the parent's
   window, its actions (CPU samples, the kill) and every worker's send times compare directly.
2. The processes start together: each reports `ready` once imported, the parent then sets one
   start time a moment ahead and releases them all. A warm-up is discarded so that connection
   setup and cold caches do not skew the percentiles.
3. The hot loop only takes two clock readings and appends an integer (and, for the failover
   scenario, the send time and the status): the client costs as little as possible.
4. Results come back whole: every latency as int ns (an `array('q')`), counts of non-2xx
   statuses, and each process's own CPU time over the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray
from multiprocessing.synchronize import Event
from typing import Any

import aiohttp
import uvloop

from bazar.bench.scenarios import (
    INVALIDATION_READS,
    INVALIDATION_SERIES,
    INVALIDATION_WRITE,
    BenchError,
    Kind,
    Request,
)
from bazar.client import EXIT_FAILED

NO_ANSWER = 0  # the status recorded for a request that got no HTTP answer
REQUEST_TIMEOUT_S = 10.0
READY_DEADLINE_S = 60.0  # importing aiohttp in a fresh interpreter on a busy machine
START_MARGIN_NS = 100_000_000  # from the release to the start: every process is waiting
TICK_S = 0.1  # progress and shared counters
RESULTS_DEADLINE_S = REQUEST_TIMEOUT_S + 10.0  # after the window: the last answers, pickling
STOP_DEADLINE_S = 5.0
BACKOFF_S = 0.001  # after a 5xx or no answer: do not spin on a refused port or a 503
PHASE_STEP = 37  # workers start the request cycle this far apart (prime: spread over 100)
MAIN = ""  # the series of a scenario that has only one

Action = tuple[float, Callable[[], None]]
"""Something the parent does at a moment of the window: (seconds after it opens, what)."""


@dataclass(frozen=True, slots=True)
class Window:
    """The measured part of a run, on the monotonic clock."""

    start_ns: int
    end_ns: int

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass(slots=True)
class Tally:
    """One series' measurements: latencies (ns) and counts of non-2xx statuses; for a
    `detailed` run also each request's send time (monotonic ns) and status, aligned."""

    latencies: array[int] = field(default_factory=lambda: array("q"))
    statuses: dict[int, int] = field(default_factory=dict)
    sent_ns: array[int] = field(default_factory=lambda: array("q"))
    codes: array[int] = field(default_factory=lambda: array("h"))

    def merge(self, other: Tally) -> None:
        self.latencies.extend(other.latencies)
        self.sent_ns.extend(other.sent_ns)
        self.codes.extend(other.codes)
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count


@dataclass(frozen=True, slots=True)
class Job:
    """What one load process does (pickled to it)."""

    index: int
    base: str
    kind: Kind
    requests: tuple[Request, ...]
    first_worker: int  # the global number of its first worker (phase and keys)
    workers: int
    key_prefix: str
    admin_token: str | None
    warmup_ns: int
    duration_ns: int


@dataclass(frozen=True, slots=True)
class Outcome:
    index: int
    tallies: dict[str, Tally]
    cpu_ns: int  # the process's own CPU time over the window


@dataclass(frozen=True, slots=True)
class LoadResult:
    window: Window
    tallies: dict[str, Tally]
    client_cpu_ns: int  # every load process's and the parent's CPU over the window

    @property
    def requests(self) -> int:
        return sum(len(tally.latencies) for tally in self.tallies.values())


def split(concurrency: int, processes: int) -> list[tuple[int, int]]:
    """(first worker, workers) per process: `concurrency` spread as evenly as can be."""
    assert 1 <= processes <= concurrency, (processes, concurrency)
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    firsts = [sum(shares[:i]) for i in range(processes)]
    return list(zip(firsts, shares, strict=True))


# ---------------------------------------------------------------- in a load process


Prepared = tuple[str, str, bytes | None, dict[str, str] | None, bool]


def _prepare(base: str, request: Request, extra: dict[str, str] | None = None) -> Prepared:
    headers = {**dict(request.headers), **(extra or {})}
    return (request.method, base + request.path, request.body, headers or None, request.purchase)


async def _send(session: aiohttp.ClientSession, prepared: Prepared) -> int:
    method, target, body, headers, _ = prepared
    try:
        async with session.request(method, target, data=body, headers=headers) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return NO_ANSWER


async def _loop_worker(
    session: aiohttp.ClientSession, job: Job, window: Window, tally: Tally, worker: int
) -> None:
    """Request after request until the window closes; only measured ones are recorded."""
    now = time.monotonic_ns
    record = tally.latencies.append
    record_sent, record_code = tally.sent_ns.append, tally.codes.append
    statuses = tally.statuses
    detailed = job.kind == "failover"
    phase = worker * PHASE_STEP % len(job.requests)
    cycle = [_prepare(job.base, r) for r in job.requests[phase:] + job.requests[:phase]]
    length, position, sent = len(cycle), 0, 0
    key = f"{job.key_prefix}-{worker}"
    window_start, window_end = window.start_ns, window.end_ns
    while (start := now()) < window_end:
        method, target, body, headers, purchase = cycle[position]
        position = position + 1 if position + 1 < length else 0
        if purchase:
            sent += 1
            headers = {**(headers or {}), "Idempotency-Key": f"{key}-{sent}"}
        try:
            async with session.request(method, target, data=body, headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = NO_ANSWER
        if start >= window_start:
            record(now() - start)
            if detailed:
                record_sent(start)
                record_code(status)
            if not 200 <= status < 300:
                statuses[status] = statuses.get(status, 0) + 1
        if status >= 500 or status == NO_ANSWER:
            await asyncio.sleep(BACKOFF_S)


async def _invalidation_worker(
    session: aiohttp.ClientSession, job: Job, window: Window, tallies: dict[str, Tally]
) -> None:
    """Write book 1, then read it after the write, again, and with no-cache; each a series."""
    assert job.admin_token is not None, "plan() requires a token for invalidation"
    auth = {"Authorization": f"Bearer {job.admin_token}"}
    steps = [_prepare(job.base, INVALIDATION_WRITE, auth)]
    steps += [_prepare(job.base, read) for read in INVALIDATION_READS]
    series = [tallies[name] for name in INVALIDATION_SERIES]
    assert len(steps) == len(series)
    while time.monotonic_ns() < window.end_ns:
        for step, tally in zip(steps, series, strict=True):
            start = time.monotonic_ns()
            status = await _send(session, step)
            if start >= window.start_ns:
                tally.latencies.append(time.monotonic_ns() - start)
                if not 200 <= status < 300:
                    tally.statuses[status] = tally.statuses.get(status, 0) + 1
            if status >= 500 or status == NO_ANSWER:
                await asyncio.sleep(BACKOFF_S)


async def _cpu_meter(window: Window) -> int:
    """This process's CPU time between the window's start and end."""
    await asyncio.sleep(max(0, window.start_ns - time.monotonic_ns()) / 1e9)
    begin = time.process_time_ns()
    await asyncio.sleep(max(0, window.end_ns - time.monotonic_ns()) / 1e9)
    return time.process_time_ns() - begin


async def _counter(tallies: Sequence[dict[str, Tally]], slot: Callable[[int], None]) -> None:
    """Publish the requests measured so far for the parent's progress bar."""
    while True:
        slot(sum(len(t.latencies) for series in tallies for t in series.values()))
        await asyncio.sleep(TICK_S)


def _series(kind: Kind) -> tuple[str, ...]:
    return INVALIDATION_SERIES if kind == "invalidation" else (MAIN,)


async def _run(job: Job, start_ns: int, slot: Callable[[int], None]) -> Outcome:
    window = Window(start_ns + job.warmup_ns, start_ns + job.warmup_ns + job.duration_ns)
    tallies = [{name: Tally() for name in _series(job.kind)} for _ in range(job.workers)]
    await asyncio.sleep(max(0, start_ns - time.monotonic_ns()) / 1e9)  # all start together
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:
        meter = asyncio.create_task(_cpu_meter(window))
        counter = asyncio.create_task(_counter(tallies, slot))
        if job.kind == "invalidation":
            workers = [_invalidation_worker(session, job, window, mine) for mine in tallies]
        else:
            workers = [
                _loop_worker(session, job, window, mine[MAIN], job.first_worker + number)
                for number, mine in enumerate(tallies)
            ]
        await asyncio.gather(*workers)
        cpu_ns = await meter
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counter
    merged = {name: Tally() for name in _series(job.kind)}
    for mine in tallies:
        for name, tally in mine.items():
            merged[name].merge(tally)
    return Outcome(job.index, merged, cpu_ns)


def process_main(
    job: Job,
    messages: Queue[tuple[str, int, Any]],
    go: Event,
    start: Synchronized[int],
    counts: SynchronizedArray[int],
) -> None:
    """A load process: report ready, wait for the release, run, send the outcome back."""
    try:
        messages.put(("ready", job.index, None))
        if not go.wait(READY_DEADLINE_S + 1):
            return  # the parent gave up on another process
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:

            def slot(count: int) -> None:
                counts[job.index] = count

            outcome = runner.run(_run(job, start.value, slot))
        messages.put(("done", job.index, outcome))
    except Exception as err:  # reported to the parent, which stops the run
        messages.put(("error", job.index, f"{type(err).__name__}: {err}"))
    except KeyboardInterrupt:
        return  # Ctrl-C reaches the whole process group: the parent reports it


# ---------------------------------------------------------------- in the parent


@dataclass(slots=True)
class _Mailbox:
    """The parent's end of the load processes' queue."""

    messages: Queue[tuple[str, int, Any]]
    processes: Sequence[multiprocessing.process.BaseProcess]
    ready: set[int] = field(default_factory=set)
    outcomes: dict[int, Outcome] = field(default_factory=dict)

    def take(self, timeout_s: float | None) -> bool:
        """Handle one message (waiting up to `timeout_s`, None: not at all); False if none.

        Raises: BenchError if a load process failed.
        """
        try:
            if timeout_s is None:
                kind, index, payload = self.messages.get_nowait()
            else:
                kind, index, payload = self.messages.get(timeout=timeout_s)
        except queue.Empty:
            return False
        if kind == "error":
            raise BenchError(f"load process {index} failed: {payload}", EXIT_FAILED)
        if kind == "ready":
            self.ready.add(index)
        else:
            assert kind == "done", kind
            assert isinstance(payload, Outcome)
            self.outcomes[index] = payload
        return True

    def wait(self, done: Callable[[], bool], deadline_s: float, what: str) -> None:
        """Raises: BenchError if `done()` is still false after `deadline_s`."""
        deadline = time.monotonic() + deadline_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or not any(process.is_alive() for process in self.processes):
                if self.take(None):
                    continue
                raise BenchError(f"load processes: not {what} in time", EXIT_FAILED)
            self.take(min(left, TICK_S))


def _drive(
    window: Window,
    actions: Sequence[Action],
    mailbox: _Mailbox,
    tick: Callable[[float], None],
) -> int:
    """Until the window closes: run each action at its moment, tick the progress, watch for
    a failed process. Returns the parent's own CPU time over the window."""
    marks: list[int] = []

    def mark() -> None:
        marks.append(time.process_time_ns())

    timed = [(0.0, mark), *actions, (window.duration_s, mark)]
    timed.sort(key=lambda item: item[0])  # stable: the first mark before actions at 0
    while timed:
        now_ns = time.monotonic_ns()
        while timed and window.start_ns + int(timed[0][0] * 1e9) <= now_ns:
            timed.pop(0)[1]()
        mailbox.take(None)
        tick((time.monotonic_ns() - window.start_ns) / 1e9)
        if timed:
            next_ns = window.start_ns + int(timed[0][0] * 1e9)
            time.sleep(max(0.0, min(TICK_S, (next_ns - time.monotonic_ns()) / 1e9)))
    assert len(marks) == 2
    return marks[1] - marks[0]


def _stop(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    for process in processes:
        if process.pid is None:
            continue  # never started
        process.join(timeout=STOP_DEADLINE_S)
        if process.is_alive():
            process.kill()
            process.join()


def run_load(
    jobs: Sequence[Job],
    *,
    actions: Sequence[Action] = (),
    progress: Callable[[int, float], None] = lambda requests, elapsed_s: None,
) -> LoadResult:
    """Run the jobs in as many processes, released together; `progress(requests measured,
    seconds since the window opened)` is called every TICK_S.

    Raises: BenchError if a load process fails or does not report in time.
    """
    assert jobs, "no load"
    context = multiprocessing.get_context("spawn")
    messages: Queue[tuple[str, int, Any]] = context.Queue()
    go = context.Event()
    start = context.Value("q", 0, lock=False)
    counts = context.Array("q", len(jobs), lock=False)
    processes = [
        context.Process(target=process_main, args=(job, messages, go, start, counts), daemon=True)
        for job in jobs
    ]
    mailbox = _Mailbox(messages, processes)
    try:
        for process in processes:
            process.start()
        mailbox.wait(lambda: len(mailbox.ready) == len(jobs), READY_DEADLINE_S, "ready")
        start.value = time.monotonic_ns() + START_MARGIN_NS
        go.set()
        warmup_ns, duration_ns = jobs[0].warmup_ns, jobs[0].duration_ns
        window = Window(start.value + warmup_ns, start.value + warmup_ns + duration_ns)
        parent_cpu_ns = _drive(
            window, actions, mailbox, lambda elapsed_s: progress(sum(counts), elapsed_s)
        )
        mailbox.wait(lambda: len(mailbox.outcomes) == len(jobs), RESULTS_DEADLINE_S, "done")
    except BaseException:
        for process in processes:
            if process.is_alive():
                process.kill()  # a failed or interrupted run: no point finishing the load
        raise
    finally:
        go.set()  # a process still waiting to start gives up at once
        _stop(processes)
    tallies: dict[str, Tally] = {}
    for index in sorted(mailbox.outcomes):
        for name, tally in mailbox.outcomes[index].tallies.items():
            tallies.setdefault(name, Tally()).merge(tally)
    client_cpu_ns = parent_cpu_ns + sum(o.cpu_ns for o in mailbox.outcomes.values())
    return LoadResult(window, tallies, client_cpu_ns)
