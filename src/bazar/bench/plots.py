"""`bazar bench --plots DIR`: the lab's figures as PNG files, drawn with matplotlib's Agg.

- `latency-cdf.png`: the latency distribution of every run (from the quantiles kept per row),
  one panel per request family, so that a hit and a miss of the same request are side by side
  (info: bare, info-hit, info-miss; search: search-hit, search-miss; invalidation: the write
  and the three reads; then the others).
- `throughput.png`: requests per second against clients, one line per scenario (and series).
- `failover-<tier>-<clients>.png`: answers per 100 ms around the kill (successes above,
  failures below), the kill at 0 and the write gap marked.

The object API (`Figure`, no pyplot): no global state and no display, whatever MPLBACKEND says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from bazar.bench.report import RunResult
from bazar.bench.write_gap import FailoverReport

PANEL_COLUMNS = 2
PANEL_SIZE_IN = (6.0, 4.0)
DPI = 110
FAMILIES = {"bare": "info", "info-hit": "info", "info-miss": "info"}


def family(scenario: str) -> str:
    """The panel a scenario's distribution is drawn in: the request it sends."""
    return FAMILIES.get(scenario, scenario.split("-")[0])


def _cdf_panel(axes: Axes, title: str, results: Sequence[RunResult]) -> None:
    drawn = [r for r in results if r.quantiles_ms]
    if not drawn:
        axes.text(0.5, 0.5, "nothing measured", ha="center", transform=axes.transAxes)
    for r in drawn:
        percents = [p for p, _ in r.quantiles_ms]
        latencies = [max(ms, 1e-3) for _, ms in r.quantiles_ms]  # log axis: no 0
        axes.plot(latencies, percents, label=f"{r.label} x{r.concurrency}")
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_ylim(0, 100)
    axes.set_xlabel("latency (ms, log)")
    axes.set_ylabel("percentile")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    if drawn:
        axes.legend(fontsize="small")


def latency_cdf(results: Sequence[RunResult], path: Path) -> None:
    families: dict[str, list[RunResult]] = {}
    for r in results:
        families.setdefault(family(r.scenario), []).append(r)
    columns = min(PANEL_COLUMNS, len(families))
    rows = math.ceil(len(families) / columns)
    width, height = PANEL_SIZE_IN
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False).flatten()
    for axes, (name, members) in zip(panels, families.items(), strict=False):
        _cdf_panel(axes, name, members)
    for axes in panels[len(families) :]:
        axes.set_visible(False)
    figure.suptitle("latency distribution (hit vs miss side by side)")
    figure.savefig(path, dpi=DPI)


def throughput(results: Sequence[RunResult], path: Path) -> None:
    lines: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        if r.series in (None, "write"):  # invalidation: one line, its iterations
            lines.setdefault(r.label, []).append((r.concurrency, r.throughput_rps))
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.subplots()
    for label, points in lines.items():
        points.sort()
        axes.plot([c for c, _ in points], [t for _, t in points], marker="o", label=label)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    clients = sorted({c for points in lines.values() for c, _ in points})
    axes.set_xticks(clients, [str(c) for c in clients])
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes.set_xlabel("clients (closed loop)")
    axes.set_ylabel("requests per second (log)")
    axes.set_title("throughput against clients")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.savefig(path, dpi=DPI)


def failover_timeline(report: FailoverReport, clients: int, path: Path) -> None:
    width_s = report.bucket_ms / 1000
    starts = [bucket.start_ms / 1000 for bucket in report.timeline]
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    axes = figure.subplots()
    ok = [bucket.ok for bucket in report.timeline]
    failed = [-bucket.failed for bucket in report.timeline]
    axes.bar(starts, ok, width=width_s, align="edge", color="tab:green", label="2xx")
    axes.bar(starts, failed, width=width_s, align="edge", color="tab:red", label="failed")
    axes.axvline(0, color="black", linestyle="--", label=f"kill -9 {report.killed}")
    if report.write_gap_ms is not None:
        gap_s = report.write_gap_ms / 1000
        axes.axvline(gap_s, color="tab:blue", linestyle=":", label=f"writes back: {gap_s:.3f} s")
    axes.axhline(0, color="grey", linewidth=0.5)
    axes.set_xlabel("seconds after the kill")
    axes.set_ylabel(f"answers per {report.bucket_ms} ms (failures below 0)")
    axes.set_title(f"failover of the {report.tier} primary, {clients} clients buying")
    axes.legend(fontsize="small")
    figure.savefig(path, dpi=DPI)


def write_plots(directory: Path, results: Sequence[RunResult]) -> list[Path]:
    """Every plot the results allow; returns the files written.

    Raises: OSError if the directory or a file cannot be written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if results:
        written.append(directory / "latency-cdf.png")
        latency_cdf(results, written[-1])
        written.append(directory / "throughput.png")
        throughput(results, written[-1])
    for r in results:
        if r.failover is not None:
            written.append(directory / f"failover-{r.failover.tier}-{r.concurrency}.png")
            failover_timeline(r.failover, r.concurrency, written[-1])
    return written
