"""`bazar bench`: the lab's measurements, as closed-loop load against the public front end.

Closed loop (N workers, each sending its next request only when the previous one answered)
because that is how the lab's clients behave and it cannot overload the server into
measuring its own queues. One aiohttp session with keep-alive per run, so we measure the
service and not TCP handshakes; a warm-up second is discarded so that connection setup and
cold caches do not skew the percentiles. The hot loop only takes two clock readings and
appends an integer, so the client costs as little as possible of what is being measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import time
import uuid
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from bazar.client import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Unreachable,
    UsageError,
    base_url,
    error_of,
    exit_status,
    fetch,
)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    method: str
    path: str
    is_purchase: bool = False


SCENARIOS = (
    Scenario("info", "GET", "/info/1"),
    Scenario("search", "GET", "/search/distributed"),
    Scenario("list", "GET", "/info"),
    Scenario("purchase", "POST", "/purchase/1", is_purchase=True),
)
SCENARIO_NAMES = tuple(scenario.name for scenario in SCENARIOS)
DEFAULT_CONCURRENCY = (1, 8, 32)
DEFAULT_DURATION_S = 10.0
WARMUP_S = 1.0
REQUEST_TIMEOUT_S = 10.0
SETUP_TIMEOUT_S = 5.0
RESTOCK = 1_000_000  # per purchase run: far more than any run can buy
NO_ANSWER = 0  # the status recorded for a request that got no HTTP answer
_PURCHASE_BODY = b'{"quantity":1}'


class BenchError(Exception):
    """A reason not to run (or to stop), with the exit status it deserves."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Summary:
    """Latency percentiles (nearest rank) in milliseconds; None when nothing was measured."""

    count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass(frozen=True, slots=True)
class RunResult:
    scenario: str
    concurrency: int
    duration_s: float
    requests: int
    throughput_rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    non_2xx: int
    statuses: dict[str, int]
    url: str
    timestamp: str


@dataclass(frozen=True, slots=True)
class RunSpec:
    base: str
    scenario: Scenario
    concurrency: int
    duration_s: float
    warmup_s: float


@dataclass(slots=True)
class _Tally:
    """One worker's measurements: latencies in ns, and counts of non-2xx statuses."""

    latencies: array[int] = field(default_factory=lambda: array("q"))
    statuses: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Window:
    start_ns: int
    end_ns: int


# ---------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of non-empty ascending values: the smallest value that is
    >= p % of them (so p99 of 100 values is the 99th, and p100 is the maximum)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = min(max(1, math.ceil(len(sorted_values) * p / 100)), len(sorted_values))
    return sorted_values[rank - 1]


def summarize(latencies_ns: Iterable[int]) -> Summary:
    values = sorted(latencies_ns)
    if not values:
        return Summary(0, None, None, None, None)

    def ms(p: float) -> float:
        return percentile(values, p) / 1e6

    return Summary(len(values), ms(50), ms(90), ms(99), values[-1] / 1e6)


def _result(spec: RunSpec, tallies: Sequence[_Tally]) -> RunResult:
    summary = summarize(value for tally in tallies for value in tally.latencies)
    statuses: dict[str, int] = {}
    for tally in tallies:
        for status, count in tally.statuses.items():
            name = "no_answer" if status == NO_ANSWER else str(status)
            statuses[name] = statuses.get(name, 0) + count
    return RunResult(
        scenario=spec.scenario.name,
        concurrency=spec.concurrency,
        duration_s=spec.duration_s,
        requests=summary.count,
        throughput_rps=summary.count / spec.duration_s,
        p50_ms=summary.p50_ms,
        p90_ms=summary.p90_ms,
        p99_ms=summary.p99_ms,
        max_ms=summary.max_ms,
        non_2xx=sum(statuses.values()),
        statuses=dict(sorted(statuses.items())),
        url=spec.base,
        timestamp=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    )


# ---------------------------------------------------------------- load


async def _worker(
    session: aiohttp.ClientSession, spec: RunSpec, window: _Window, tally: _Tally, key: str
) -> None:
    """Request after request until the window closes; only measured ones are recorded."""
    perf = time.perf_counter_ns
    record = tally.latencies.append
    statuses = tally.statuses
    method, target = spec.scenario.method, spec.base + spec.scenario.path
    purchase = spec.scenario.is_purchase
    body = _PURCHASE_BODY if purchase else None
    headers: dict[str, str] | None = None
    sent = 0
    while (start := perf()) < window.end_ns:
        if purchase:
            sent += 1
            headers = {"Content-Type": "application/json", "Idempotency-Key": f"{key}-{sent}"}
        try:
            async with session.request(method, target, data=body, headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = NO_ANSWER
        if start >= window.start_ns:
            record(perf() - start)
            if not 200 <= status < 300:
                statuses[status] = statuses.get(status, 0) + 1
        if status == NO_ANSWER:
            await asyncio.sleep(0.001)  # do not spin on a refused port


async def _tick(progress: Progress, task: TaskID, spec: RunSpec, tallies: list[_Tally]) -> None:
    launched = time.monotonic()
    total = spec.warmup_s + spec.duration_s
    while True:
        done = sum(len(tally.latencies) for tally in tallies)
        progress.update(task, completed=min(time.monotonic() - launched, total), requests=done)
        await asyncio.sleep(0.1)


async def run_once(spec: RunSpec, progress: Progress) -> RunResult:
    """One (scenario, concurrency) run on its own keep-alive session."""
    tallies = [_Tally() for _ in range(spec.concurrency)]
    label = f"{spec.scenario.name} x{spec.concurrency}"
    task = progress.add_task(label, total=spec.warmup_s + spec.duration_s, requests=0)
    prefix = f"bench-{uuid.uuid4().hex[:12]}"
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:
        start = time.perf_counter_ns() + int(spec.warmup_s * 1e9)
        window = _Window(start, start + int(spec.duration_s * 1e9))
        ticker = asyncio.create_task(_tick(progress, task, spec, tallies))
        try:
            await asyncio.gather(
                *(
                    _worker(session, spec, window, tally, f"{prefix}-{number}")
                    for number, tally in enumerate(tallies)
                )
            )
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    done = sum(len(tally.latencies) for tally in tallies)
    progress.update(task, completed=spec.warmup_s + spec.duration_s, requests=done)
    return _result(spec, tallies)


# ---------------------------------------------------------------- setup


def plan(
    url: str,
    *,
    scenarios: Sequence[str],
    concurrency: Sequence[int],
    duration_s: float,
    admin_token: str | None,
    warmup_s: float = WARMUP_S,
) -> list[RunSpec]:
    """The runs to do, in order; BenchError(exit 2) for anything unusable."""
    try:
        base = base_url(url)
    except UsageError as err:
        raise BenchError(str(err), EXIT_USAGE) from err
    names = list(dict.fromkeys(scenarios))
    unknown = [name for name in names if name not in SCENARIO_NAMES]
    if unknown:
        known = ", ".join(SCENARIO_NAMES)
        raise BenchError(f"unknown scenario {', '.join(unknown)} (known: {known})", EXIT_USAGE)
    if not names or not concurrency:
        raise BenchError("give at least one scenario and one concurrency", EXIT_USAGE)
    if any(level < 1 for level in concurrency):
        raise BenchError("concurrency must be at least 1", EXIT_USAGE)
    if not duration_s > 0:
        raise BenchError("duration must be more than 0 seconds", EXIT_USAGE)
    if "purchase" in names and not admin_token:
        raise BenchError(
            "the purchase scenario restocks book 1 first and needs the admin token "
            "(--admin-token, BAZAR_ADMIN_TOKEN or <data-dir>/admin.token)",
            EXIT_USAGE,
        )
    chosen = [scenario for name in names for scenario in SCENARIOS if scenario.name == name]
    return [
        RunSpec(base, scenario, level, duration_s, warmup_s)
        for scenario in chosen
        for level in concurrency
    ]


def _setup_request(
    method: str, url: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> None:
    """A request before a run; BenchError unless it answered 2xx."""
    try:
        reply = fetch(method, url, timeout=SETUP_TIMEOUT_S, body=body, headers=headers)
    except Unreachable as err:
        raise BenchError(str(err), EXIT_UNAVAILABLE) from err
    if not 200 <= reply.status < 300:
        code, message = error_of(reply)
        status = exit_status(reply.status, code)
        raise BenchError(f"{method} {url}: {code} ({reply.status}): {message}", status)


def restock(base: str, admin_token: str) -> None:
    """Add RESTOCK copies of book 1, so that a purchase run never runs out of stock."""
    _setup_request(
        "PATCH",
        f"{base}/books/1",
        body=json.dumps({"stock_delta": RESTOCK}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {admin_token}"},
    )


# ---------------------------------------------------------------- report


def answered(result: RunResult) -> int:
    """How many measured requests got an HTTP answer (of any status)."""
    return result.requests - result.statuses.get("no_answer", 0)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def results_table(results: Sequence[RunResult]) -> Table:
    table = Table(title="bazar bench (latencies in ms)", title_justify="left")
    table.add_column("scenario")
    for column in ("clients", "requests", "req/s", "p50", "p90", "p99", "max", "non-2xx"):
        table.add_column(column, justify="right")
    for result in results:
        bad = f"[red]{result.non_2xx}[/]" if result.non_2xx else "0"
        table.add_row(
            result.scenario,
            str(result.concurrency),
            str(result.requests),
            f"{result.throughput_rps:,.0f}",
            _ms(result.p50_ms),
            _ms(result.p90_ms),
            _ms(result.p99_ms),
            _ms(result.max_ms),
            bad,
        )
    return table


def write_results(path: str, results: Sequence[RunResult]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = [dataclasses.asdict(result) for result in results]
    target.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        TextColumn("{task.fields[requests]:>9,} req"),
        TimeRemainingColumn(),
        console=console,
        refresh_per_second=4,  # the refresh thread competes with the workers for the GIL
    )


def run_plan(
    specs: Sequence[RunSpec], *, admin_token: str | None, console: Console
) -> list[RunResult]:
    results: list[RunResult] = []
    with _progress(console) as progress:
        for spec in specs:
            if spec.scenario.is_purchase:
                assert admin_token is not None, "plan() requires a token for purchases"
                restock(spec.base, admin_token)
            results.append(asyncio.run(run_once(spec, progress)))
    return results


def bench_command(
    url: str,
    *,
    scenarios: list[str],
    concurrency: list[int],
    duration_s: float,
    admin_token: str | None,
    output: str | None,
    warmup_s: float = WARMUP_S,
) -> int:
    """`bazar bench`: run every (scenario, concurrency), print a table, optionally save JSON."""
    errors = Console(stderr=True, highlight=False)
    try:
        specs = plan(
            url,
            scenarios=scenarios,
            concurrency=concurrency,
            duration_s=duration_s,
            admin_token=admin_token,
            warmup_s=warmup_s,
        )
        _setup_request("GET", f"{specs[0].base}/info/1")
        results = run_plan(specs, admin_token=admin_token, console=errors)
    except BenchError as err:
        errors.print(f"[bold red]error[/] bench: {escape(str(err))}")
        return err.status
    Console(highlight=False).print(results_table(results))
    if output is not None:
        try:
            write_results(output, results)
        except OSError as err:
            errors.print(f"[bold red]error[/] cannot write {escape(output)}: {escape(str(err))}")
            return EXIT_USAGE
        errors.print(f"results written to {escape(output)}")
    silent = [f"{r.scenario} x{r.concurrency}" for r in results if not answered(r)]
    if silent:
        errors.print(f"[bold red]error[/] no answer at all in: {', '.join(silent)}")
        return EXIT_UNAVAILABLE
    return EXIT_OK
