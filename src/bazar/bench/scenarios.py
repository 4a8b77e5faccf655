"""What `bazar bench` can measure, and the plan of runs: pure data, checked before anything runs.

A scenario is one of three kinds:
- `loop`: closed-loop workers cycling through a fixed list of requests (one request for most
  scenarios; a 100-request mix for `mixed`). Each worker starts the list at its own offset, so
  that workers are out of phase.
- `invalidation`: each iteration writes book 1 (an admin restock of +1, acknowledged), then
  reads it three times: right after the write (a miss caused by the invalidation), again (a
  hit: nothing was written since, unless another client wrote), and with
  `Cache-Control: no-cache` (a replica read). Each is its own series, and so is the write.
- `failover`: purchases with every request recorded, and a kill -9 of a tier's primary in the
  middle of the window (`bench.write_gap`).

Rules: `bare` (the baseline server) runs first, so that later rows can be compared with it;
`failover` runs last, because it leaves the cluster a replica short.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bazar.client import EXIT_USAGE, UsageError, base_url, is_loopback

Kind = Literal["loop", "invalidation", "failover"]
TIERS = ("catalog", "order")
DEFAULT_CONCURRENCY = (1, 8, 32)
DEFAULT_DURATION_S = 10.0
WARMUP_S = 1.0
RESTOCK = 1_000_000  # per purchase run: far more than any run can buy
MIX_LENGTH = 100  # requests in the `mixed` cycle: 10 purchases, 90 reads
MIX_PURCHASE_EVERY = 10
MIX_BOOK_IDS = (1, 2, 3, 4, 5, 6, 7)
MIX_TOPICS = ("distributed", "undergraduate")
SINGLE_PROCESS_CONCURRENCY_MAX = 8  # beyond, the load is spread over several processes
PROCESSES_MAX = 4
NO_CACHE = (("Cache-Control", "no-cache"),)
PURCHASE_BODY = b'{"quantity":1}'
JSON_CONTENT = (("Content-Type", "application/json"),)


class BenchError(Exception):
    """A reason not to run (or to stop), with the exit status it deserves."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a scenario; a purchase gets a fresh Idempotency-Key each time."""

    method: str
    path: str
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    purchase: bool = False


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    kind: Kind
    requests: tuple[Request, ...]
    description: str
    needs_token: bool = False  # a restock (or, for invalidation, the writes themselves)


PURCHASE = Request("POST", "/purchase/1", PURCHASE_BODY, JSON_CONTENT, purchase=True)
INFO_HIT = Request("GET", "/info/1")
SEARCH_HIT = Request("GET", "/search/distributed")


def mixed_requests() -> tuple[Request, ...]:
    """90 % reads (info over every book, searches over both topics), 10 % purchases of book 1,
    the purchases spread evenly through the cycle."""
    requests: list[Request] = []
    reads = 0
    for position in range(MIX_LENGTH):
        if position % MIX_PURCHASE_EVERY == MIX_PURCHASE_EVERY - 1:
            requests.append(PURCHASE)
            continue
        if reads % 3 == 2:
            topic = MIX_TOPICS[(reads // 3) % len(MIX_TOPICS)]
            requests.append(Request("GET", f"/search/{topic}"))
        else:
            requests.append(Request("GET", f"/info/{MIX_BOOK_IDS[reads % len(MIX_BOOK_IDS)]}"))
        reads += 1
    assert len(requests) == MIX_LENGTH
    assert sum(r.purchase for r in requests) == MIX_LENGTH // MIX_PURCHASE_EVERY
    return tuple(requests)


SCENARIOS = (
    Scenario("bare", "loop", (INFO_HIT,), "GET /info/1 on a bare aiohttp server (the baseline)"),
    Scenario("info-hit", "loop", (INFO_HIT,), "GET /info/1, warm cache"),
    Scenario(
        "info-miss", "loop", (Request("GET", "/info/1", headers=NO_CACHE),), "no-cache replica read"
    ),
    Scenario("search-hit", "loop", (SEARCH_HIT,), "GET /search/distributed, warm cache"),
    Scenario(
        "search-miss",
        "loop",
        (Request("GET", "/search/distributed", headers=NO_CACHE),),
        "no-cache replica read",
    ),
    Scenario("list", "loop", (Request("GET", "/info"),), "GET /info, every book"),
    Scenario("purchase", "loop", (PURCHASE,), "POST /purchase/1", needs_token=True),
    Scenario(
        "mixed", "loop", mixed_requests(), "90 % cached reads, 10 % purchases", needs_token=True
    ),
    Scenario(
        "invalidation",
        "invalidation",
        (),
        "GET /info/1 after a write, without one, and no-cache",
        needs_token=True,
    ),
    Scenario("failover", "failover", (PURCHASE,), "purchases, kill -9 a primary", needs_token=True),
)
SCENARIO_NAMES = tuple(scenario.name for scenario in SCENARIOS)
ALIASES = {"info": "info-hit", "search": "search-hit"}  # the names of the first `bazar bench`
SCENARIO_CHOICES = (*SCENARIO_NAMES, *ALIASES)
DEFAULT_SCENARIOS = ("info-hit", "info-miss", "search-hit", "search-miss")
DEFAULT_WRITE_SCENARIOS = ("purchase", "mixed", "invalidation")  # when there is an admin token
INVALIDATION_SERIES = ("write", "after-write", "hit", "no-cache")
INVALIDATION_WRITE = Request(
    "PATCH", "/books/1", json.dumps({"stock_delta": 1}).encode(), JSON_CONTENT
)
INVALIDATION_READS = (INFO_HIT, INFO_HIT, Request("GET", "/info/1", headers=NO_CACHE))


def canonical(name: str) -> str:
    """A scenario's name, the old aliases (`info`, `search`) resolved."""
    return ALIASES.get(name, name)


def scenario_named(name: str) -> Scenario:
    """Raises: KeyError for an unknown name."""
    found = {scenario.name: scenario for scenario in SCENARIOS}
    return found[canonical(name)]


def default_processes(concurrency: int, cpus: int | None = None) -> int:
    """How many load processes for `concurrency` clients: one up to
    SINGLE_PROCESS_CONCURRENCY_MAX (an asyncio loop keeps up with that many in-flight requests
    and one process disturbs the server least), else one per core up to PROCESSES_MAX (more
    processes than cores only fight each other and the server for the CPU)."""
    assert concurrency >= 1, concurrency
    if concurrency <= SINGLE_PROCESS_CONCURRENCY_MAX:
        return 1
    cores = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, min(PROCESSES_MAX, cores, concurrency))


@dataclass(frozen=True, slots=True)
class FailoverOptions:
    tier: str = "catalog"
    kill_after_s: float | None = None  # None: a quarter into the window


DEFAULT_FAILOVER = FailoverOptions()


@dataclass(frozen=True, slots=True)
class RunSpec:
    base: str
    scenario: Scenario
    concurrency: int
    processes: int
    duration_s: float
    warmup_s: float
    failover: FailoverOptions = DEFAULT_FAILOVER

    @property
    def kill_after_s(self) -> float:
        """When the failover scenario kills, in seconds after the window opens."""
        chosen = self.failover.kill_after_s
        return self.duration_s / 4 if chosen is None else chosen


def _check_names(scenarios: Sequence[str]) -> list[Scenario]:
    names = list(dict.fromkeys(canonical(name) for name in scenarios))
    unknown = [name for name in names if name not in SCENARIO_NAMES]
    if unknown:
        known = ", ".join(SCENARIO_CHOICES)
        raise BenchError(f"unknown scenario {', '.join(unknown)} (known: {known})", EXIT_USAGE)
    if not names:
        raise BenchError("give at least one scenario and one concurrency", EXIT_USAGE)
    chosen = [scenario_named(name) for name in names]
    # bare first (later rows are compared with it), failover last (it kills a replica)
    return sorted(chosen, key=lambda s: {"bare": 0, "failover": 2}.get(s.name, 1))


def _check_numbers(
    concurrency: Sequence[int], duration_s: float, warmup_s: float, processes: int | None
) -> None:
    if not concurrency:
        raise BenchError("give at least one scenario and one concurrency", EXIT_USAGE)
    if any(level < 1 for level in concurrency):
        raise BenchError("concurrency must be at least 1", EXIT_USAGE)
    if not duration_s > 0:
        raise BenchError("duration must be more than 0 seconds", EXIT_USAGE)
    if not warmup_s >= 0:
        raise BenchError("warm-up must be 0 seconds or more", EXIT_USAGE)
    if processes is not None and processes < 1:
        raise BenchError("--processes must be at least 1", EXIT_USAGE)


def _check_failover(base: str, options: FailoverOptions, duration_s: float) -> None:
    if not is_loopback(base):
        raise BenchError(
            "the failover scenario kills a primary by its pid: the front end must be on this "
            f"host (127.0.0.1), not {base}",
            EXIT_USAGE,
        )
    if options.tier not in TIERS:
        raise BenchError(f"no tier {options.tier!r} (one of {', '.join(TIERS)})", EXIT_USAGE)
    kill_after_s = options.kill_after_s
    if kill_after_s is not None and not 0 <= kill_after_s < duration_s:
        raise BenchError("--kill-after must be within --duration", EXIT_USAGE)


def plan(
    url: str,
    *,
    scenarios: Sequence[str],
    concurrency: Sequence[int],
    duration_s: float,
    admin_token: str | None,
    warmup_s: float = WARMUP_S,
    processes: int | None = None,
    failover: FailoverOptions = DEFAULT_FAILOVER,
) -> list[RunSpec]:
    """The runs to do, in order; BenchError(exit 2) for anything unusable."""
    try:
        base = base_url(url)
    except UsageError as err:
        raise BenchError(str(err), EXIT_USAGE) from err
    chosen = _check_names(scenarios)
    _check_numbers(concurrency, duration_s, warmup_s, processes)
    needing = [scenario.name for scenario in chosen if scenario.needs_token]
    if needing and not admin_token:
        raise BenchError(
            f"{', '.join(needing)} write(s) book 1 (a restock first) and need the admin token "
            "(--admin-token, BAZAR_ADMIN_TOKEN or <data-dir>/admin.token)",
            EXIT_USAGE,
        )
    if any(scenario.kind == "failover" for scenario in chosen):
        _check_failover(base, failover, duration_s)
    return [
        RunSpec(
            base=base,
            scenario=scenario,
            concurrency=level,
            processes=min(processes, level) if processes else default_processes(level),
            duration_s=duration_s,
            warmup_s=warmup_s,
            failover=failover,
        )
        for scenario in chosen
        for level in concurrency
    ]
