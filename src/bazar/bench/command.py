"""`bazar bench`: plan the runs, run each against the cluster (and the baseline), report.

For each (scenario, clients) run: restock book 1 if the scenario buys, find the server's
processes (the front end by its listening socket, the replicas from `GET /cluster`), run the
load (`load.run_load`) with the CPU samples at the window's edges (and, for failover, the kill)
as actions on the load's clock, then turn it into rows (`report.results_of`). The baseline
server, when asked for, runs for the whole command and is stopped at its end, always. A run
that fails stops the plan; the rows measured before it are still printed and written.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from bazar.bench import compare, procstat, write_gap
from bazar.bench.baseline import Baseline, running_baseline
from bazar.bench.load import Action, Job, run_load, split
from bazar.bench.report import (
    RunResult,
    answered,
    cpu_table,
    failover_table,
    header,
    results_of,
    results_table,
    with_bare_ratios,
    write_results,
)
from bazar.bench.scenarios import (
    DEFAULT_FAILOVER,
    RESTOCK,
    WARMUP_S,
    BenchError,
    FailoverOptions,
    RunSpec,
    plan,
)
from bazar.client import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Reply,
    Unreachable,
    error_of,
    exit_status,
    fetch,
    is_loopback,
)

SETUP_TIMEOUT_S = 5.0
EXIT_INTERRUPTED = 130
REPORT_WIDTH = 160  # the tables' columns when printed to a file or a pipe
RESTOCKING = ("purchase", "mixed", "failover")  # they buy book 1


def _setup_request(
    method: str, url: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> Reply:
    """A request before a run; BenchError unless it answered 2xx."""
    try:
        reply = fetch(method, url, timeout=SETUP_TIMEOUT_S, body=body, headers=headers)
    except Unreachable as err:
        raise BenchError(str(err), EXIT_UNAVAILABLE) from err
    if not 200 <= reply.status < 300:
        code, message = error_of(reply)
        status = exit_status(reply.status, code)
        raise BenchError(f"{method} {url}: {code} ({reply.status}): {message}", status)
    return reply


def restock(base: str, admin_token: str) -> None:
    """Add RESTOCK copies of book 1, so that a purchase run never runs out of stock."""
    _setup_request(
        "PATCH",
        f"{base}/books/1",
        body=json.dumps({"stock_delta": RESTOCK}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {admin_token}"},
    )


def cluster_data(base: str) -> dict[str, Any]:
    """The front end's `GET /cluster` data; empty if it does not answer it (the CPU of the
    replicas is then unknown, and the failover scenario waits for it)."""
    try:
        document = json.loads(_setup_request("GET", f"{base}/cluster").body)
    except (BenchError, ValueError):
        return {}
    data = document.get("data") if isinstance(document, dict) else None
    return data if isinstance(data, dict) else {}


def server_pids(cluster: Mapping[str, Any], frontend_pid: int | None) -> dict[str, int | None]:
    """Every process of the cluster by name: the front end, then each replica whose pid is
    on this host (its URL is a loopback one)."""
    pids: dict[str, int | None] = {"frontend": frontend_pid}
    for tier in ("catalog", "order"):
        for replica in (cluster.get(tier) or {}).get("replicas") or []:
            pid = replica.get("pid")
            local = is_loopback(str(replica.get("url", "")))
            pids[str(replica.get("name"))] = pid if isinstance(pid, int) and local else None
    return pids


def frontend_pid(base: str) -> int | None:
    """The front end's pid from its listening socket, if it runs on this host."""
    if not is_loopback(base):
        return None
    port = urllib.parse.urlsplit(base).port or 80
    return procstat.pid_listening_on(port)


def jobs_of(spec: RunSpec, base: str, admin_token: str | None) -> list[Job]:
    prefix = f"bench-{uuid.uuid4().hex[:12]}"
    return [
        Job(
            index=index,
            base=base,
            kind=spec.scenario.kind,
            requests=spec.scenario.requests,
            first_worker=first,
            workers=workers,
            key_prefix=prefix,
            admin_token=admin_token,
            warmup_ns=int(spec.warmup_s * 1e9),
            duration_ns=int(spec.duration_s * 1e9),
        )
        for index, (first, workers) in enumerate(split(spec.concurrency, spec.processes))
    ]


def run_spec(
    spec: RunSpec,
    *,
    admin_token: str | None,
    progress: Progress,
    pids: Mapping[str, int | None],
    base: str,
) -> list[RunResult]:
    """One (scenario, clients) run against `base` (the front end, or the baseline)."""
    if spec.scenario.name in RESTOCKING:
        assert admin_token is not None, "plan() requires a token for purchases"
        restock(base, admin_token)
    samples: list[procstat.Sample] = []
    actions: list[Action] = [(0.0, lambda: samples.append(procstat.sample(pids)))]
    actions.append((spec.duration_s, lambda: samples.append(procstat.sample(pids))))
    kill = None
    if spec.scenario.kind == "failover":
        target = write_gap.wait_for_primary(lambda: cluster_data(base), spec.failover.tier)
        kill = write_gap.Kill(target)
        actions.append((spec.kill_after_s, kill))
    total_s = spec.warmup_s + spec.duration_s
    task = progress.add_task(f"{spec.scenario.name} x{spec.concurrency}", total=total_s, requests=0)

    def tick(requests: int, elapsed_s: float) -> None:
        done_s = min(max(spec.warmup_s + elapsed_s, 0.0), total_s)
        progress.update(task, completed=done_s, requests=requests)

    load_average_1m = os.getloadavg()[0]
    load = run_load(jobs_of(spec, base, admin_token), actions=actions, progress=tick)
    progress.update(task, completed=total_s, requests=load.requests)
    before, after = samples
    cpu = procstat.cpu_use(before, after, requests=load.requests, window_s=load.window.duration_s)
    report = None
    if kill is not None:
        tally = load.tallies[""]
        report = write_gap.report(
            kill, spec.kill_after_s, load.window, tally.sent_ns, tally.latencies, tally.codes
        )
    return results_of(spec, load, cpu, load_average_1m=load_average_1m, failover=report)


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        TextColumn("{task.fields[requests]:>9,} req"),
        TimeRemainingColumn(),
        console=console,
        refresh_per_second=4,  # the parent is a load process too (progress, samples, kill)
    )


def runs(
    specs: Sequence[RunSpec],
    *,
    admin_token: str | None,
    console: Console,
    baseline: Baseline | None = None,
) -> Iterator[list[RunResult]]:
    """The rows of each run in turn (so that a caller keeps those done if one fails)."""
    pid_of_frontend = frontend_pid(specs[0].base) if specs else None
    with progress_bar(console) as progress:
        for spec in specs:
            pids: dict[str, int | None]
            if spec.scenario.name == "bare":
                assert baseline is not None, "bench_command starts the baseline for `bare`"
                base, pids = baseline.url, {"bare": baseline.pid}
            else:
                base = spec.base
                pids = server_pids(cluster_data(base), pid_of_frontend)
            yield run_spec(spec, admin_token=admin_token, progress=progress, pids=pids, base=base)


def run_plan(
    specs: Sequence[RunSpec], *, admin_token: str | None, console: Console
) -> list[RunResult]:
    """Every run of the plan (no baseline); BenchError stops it."""
    return [row for rows in runs(specs, admin_token=admin_token, console=console) for row in rows]


@contextlib.contextmanager
def _baseline_if(needed: bool) -> Iterator[Baseline | None]:
    if not needed:
        yield None
        return
    with running_baseline() as baseline:
        yield baseline


def _measure(
    specs: Sequence[RunSpec], admin_token: str | None, errors: Console
) -> tuple[list[RunResult], int]:
    """Run the plan; the rows measured, and the exit status (a failure keeps what was done)."""
    results: list[RunResult] = []
    try:
        if any(spec.scenario.name != "bare" for spec in specs):
            _setup_request("GET", f"{specs[0].base}/info/1")
        needed = any(spec.scenario.name == "bare" for spec in specs)
        with _baseline_if(needed) as baseline:
            for rows in runs(specs, admin_token=admin_token, console=errors, baseline=baseline):
                results.extend(rows)
    except BenchError as err:
        errors.print(f"[bold red]error[/] bench: {escape(str(err))}")
        return results, err.status
    except KeyboardInterrupt:
        errors.print("[bold red]interrupted[/]")
        return results, EXIT_INTERRUPTED
    return results, EXIT_OK


def _stdout() -> Console:
    """The tables' console: a terminal's width, else REPORT_WIDTH (a file, a pipe)."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=REPORT_WIDTH)


def _publish(
    results: Sequence[RunResult], meta: dict[str, Any], output: Path | None, plots: Path | None
) -> int:
    """Print the tables, write the JSON and the plots; EXIT_USAGE if a file cannot be written."""
    out, errors = _stdout(), Console(stderr=True, highlight=False)
    out.print(results_table(results))
    if any(r.server_cpu_ms_per_request for r in results):
        out.print(cpu_table(results))
    if any(r.failover is not None for r in results):
        out.print(failover_table(results))
    try:
        if output is not None:
            write_results(output, meta, results)
            errors.print(f"results written to {escape(str(output))}")
        if plots is not None:
            from bazar.bench.plots import write_plots  # matplotlib: only when asked for

            written = write_plots(plots, results)
            errors.print(f"{len(written)} plots written to {escape(str(plots))}")
    except OSError as err:
        errors.print(f"[bold red]error[/] cannot write: {escape(str(err))}")
        return EXIT_USAGE
    return EXIT_OK


def bench_command(
    url: str,
    *,
    scenarios: Sequence[str],
    concurrency: Sequence[int],
    duration_s: float,
    admin_token: str | None,
    output: str | None = None,
    plots: str | None = None,
    warmup_s: float = WARMUP_S,
    processes: int | None = None,
    baseline: bool = False,
    failover_options: FailoverOptions = DEFAULT_FAILOVER,
    command: str = "bazar bench",
) -> int:
    """`bazar bench`: every (scenario, concurrency), a table, optionally JSON and plots."""
    errors = Console(stderr=True, highlight=False)
    try:
        specs = plan(
            url,
            scenarios=[*(["bare"] if baseline else []), *scenarios],
            concurrency=concurrency,
            duration_s=duration_s,
            admin_token=admin_token,
            warmup_s=warmup_s,
            processes=processes,
            failover=failover_options,
        )
    except BenchError as err:
        errors.print(f"[bold red]error[/] bench: {escape(str(err))}")
        return err.status
    meta = header(command)
    measured, status = _measure(specs, admin_token, errors)
    results = with_bare_ratios(measured)
    if results:
        written = _publish(
            results, meta, Path(output) if output else None, Path(plots) if plots else None
        )
        status = status or written
    silent = [f"{r.label} x{r.concurrency}" for r in results if not answered(r)]
    if silent and status == EXIT_OK:
        errors.print(f"[bold red]error[/] no answer at all in: {', '.join(silent)}")
        return EXIT_UNAVAILABLE
    return status


def compare_command(old: str, new: str) -> int:
    """`bazar bench --compare OLD.json NEW.json`: a before/after table, nothing run."""
    errors = Console(stderr=True, highlight=False)
    try:
        old_rows = compare.read_results(Path(old))
        new_rows = compare.read_results(Path(new))
    except (OSError, ValueError) as err:
        errors.print(f"[bold red]error[/] compare: {escape(str(err))}")
        return EXIT_USAGE
    table = compare.compare_table(compare.compare(old_rows, new_rows), old, new)
    _stdout().print(table)
    return EXIT_OK
