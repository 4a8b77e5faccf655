"""The results of `bazar bench`: one row per (scenario, series, clients), as a table and JSON.

A row says what was measured (latency percentiles, throughput, statuses) and what it cost:
the server's CPU per request by process and in total, and how busy the load generator was
(`client_cpu_percent`, % of one core: near 100 per load process means the client, not the
server, may be what limits). The JSON file is `{"meta": header, "results": [row, ...]}`, with
everything, the failover timeline included; `compare.py` and `plots.py` read it back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from bazar.bench.load import NO_ANSWER, LoadResult, Tally
from bazar.bench.procstat import CpuUse
from bazar.bench.scenarios import RunSpec
from bazar.bench.stats import summarize
from bazar.bench.write_gap import FailoverReport


@dataclass(frozen=True, slots=True)
class RunResult:
    scenario: str
    series: str | None  # e.g. `after-write` for invalidation; None for a one-series scenario
    concurrency: int
    processes: int
    duration_s: float
    requests: int
    throughput_rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None
    quantiles_ms: list[tuple[float, float]]  # (percent, ms): stats.QUANTILE_PERCENTS
    non_2xx: int
    statuses: dict[str, int]  # non-2xx answers by status, and "no_answer"
    server_cpu_ms_per_request: dict[str, float | None]  # by process; None: unknown
    server_cpu_percent: dict[str, float | None]  # by process, % of one core
    server_cpu_ms_per_request_total: float | None
    client_cpu_percent: float  # every load process and the parent, % of one core
    bare_ratio: float | None  # throughput / the baseline's at the same clients
    failover: FailoverReport | None
    load_average_1m: float  # before the run: the cores may be shared
    url: str
    timestamp: str

    @property
    def label(self) -> str:
        return self.scenario if self.series is None else f"{self.scenario} {self.series}"


def _statuses(tally: Tally) -> dict[str, int]:
    named = {
        ("no_answer" if status == NO_ANSWER else str(status)): count
        for status, count in tally.statuses.items()
    }
    return dict(sorted(named.items()))


def results_of(
    spec: RunSpec,
    load: LoadResult,
    cpu: CpuUse,
    *,
    load_average_1m: float,
    failover: FailoverReport | None = None,
) -> list[RunResult]:
    """One row per series of the run. The CPU figures are per request of the whole run
    (all series: for invalidation, the writes and the three reads together)."""
    timestamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    duration_s = load.window.duration_s
    rows = []
    for series, tally in load.tallies.items():
        summary = summarize(tally.latencies)
        statuses = _statuses(tally)
        rows.append(
            RunResult(
                scenario=spec.scenario.name,
                series=series or None,
                concurrency=spec.concurrency,
                processes=spec.processes,
                duration_s=duration_s,
                requests=summary.count,
                throughput_rps=summary.count / duration_s,
                p50_ms=summary.p50_ms,
                p90_ms=summary.p90_ms,
                p99_ms=summary.p99_ms,
                p999_ms=summary.p999_ms,
                max_ms=summary.max_ms,
                quantiles_ms=list(summary.quantiles_ms),
                non_2xx=sum(statuses.values()),
                statuses=statuses,
                server_cpu_ms_per_request=cpu.ms_per_request,
                server_cpu_percent=cpu.percent,
                server_cpu_ms_per_request_total=cpu.total_ms_per_request,
                client_cpu_percent=load.client_cpu_ns / 1e9 / duration_s * 100,
                bare_ratio=None,
                failover=failover,
                load_average_1m=load_average_1m,
                url=spec.base,
                timestamp=timestamp,
            )
        )
    return rows


def with_bare_ratios(results: Sequence[RunResult]) -> list[RunResult]:
    """Each `info-hit` row with its throughput as a ratio to `bare` at the same clients."""
    bare = {r.concurrency: r.throughput_rps for r in results if r.scenario == "bare"}
    return [
        dataclasses.replace(r, bare_ratio=r.throughput_rps / bare[r.concurrency])
        if r.scenario == "info-hit" and bare.get(r.concurrency)
        else r
        for r in results
    ]


def answered(result: RunResult) -> int:
    """How many measured requests got an HTTP answer (of any status)."""
    return result.requests - result.statuses.get("no_answer", 0)


# ---------------------------------------------------------------- tables


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def results_table(results: Sequence[RunResult]) -> Table:
    table = Table(title="bazar bench (latencies in ms)", title_justify="left")
    table.add_column("scenario")
    columns = ("clients", "requests", "req/s", "p50", "p90", "p99", "p99.9", "max", "non-2xx")
    for column in (*columns, "server CPU ms/req", "client CPU %"):
        table.add_column(column, justify="right")
    ratios = any(r.bare_ratio is not None for r in results)
    if ratios:
        table.add_column("x bare", justify="right")
    for r in results:
        bad = f"[red]{r.non_2xx}[/]" if r.non_2xx else "0"
        row = [r.label, str(r.concurrency), f"{r.requests:,}", f"{r.throughput_rps:,.0f}"]
        row += [_number(v) for v in (r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms)]
        row += [bad, _number(r.server_cpu_ms_per_request_total), f"{r.client_cpu_percent:.0f}"]
        if ratios:
            row.append(_number(r.bare_ratio, 2))
        table.add_row(*row)
    return table


def cpu_table(results: Sequence[RunResult]) -> Table:
    """Server CPU ms per request, by process (one row per run)."""
    table = Table(title="server CPU ms per request, by process", title_justify="left")
    table.add_column("scenario")
    table.add_column("clients", justify="right")
    names = list(dict.fromkeys(n for r in results for n in r.server_cpu_ms_per_request))
    for name in names:
        table.add_column(name, justify="right")
    for r in results:
        if r.series not in (None, "write"):  # one row per run: the CPU is the run's
            continue
        cells = [_number(r.server_cpu_ms_per_request.get(name)) for name in names]
        table.add_row(r.scenario, str(r.concurrency), *cells)
    return table


def failover_table(results: Sequence[RunResult]) -> Table:
    table = Table(title="failover (kill -9 of a primary)", title_justify="left")
    for column in ("clients", "killed", "kill at s", "write gap ms", "failed after", "statuses"):
        table.add_column(column, justify="right")
    for r in results:
        if r.failover is None:
            continue
        f = r.failover
        table.add_row(
            str(r.concurrency),
            f"{f.killed} ({f.killed_pid})",
            f"{f.kill_after_s:.2f}",
            _number(f.write_gap_ms, 1),
            str(f.failed_after_kill),
            ", ".join(f"{k}: {v}" for k, v in f.statuses_after_kill.items()) or "-",
        )
    return table


# ---------------------------------------------------------------- JSON


def redacted(command: str) -> str:
    """The command line without the admin token's value (result files get shared)."""
    words = command.split()
    for index, word in enumerate(words):
        if word.startswith("--admin-token="):
            words[index] = "--admin-token=<redacted>"
        elif word == "--admin-token" and index + 1 < len(words):
            words[index + 1] = "<redacted>"
    return " ".join(words)


def header(command: str) -> dict[str, Any]:
    """Where and when a measurement was made: the cores may be shared, so the load average."""
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:  # no git here: the commit is unknown
        commit = ""
    return {
        "command": redacted(command),
        "started": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "commit": commit or None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "note": "the cores may be shared with other processes (test runs of other sessions) "
        "during the run: each measurement records os.getloadavg() before it starts "
        "(`bazar bench`: load_average_1m in every row)",
    }


def write_results(path: Path, meta: dict[str, Any], results: Sequence[RunResult]) -> None:
    """Raises: OSError if the file cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"meta": meta, "results": [dataclasses.asdict(r) for r in results]}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
