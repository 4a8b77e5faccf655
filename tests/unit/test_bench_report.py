"""Rows, tables, JSON, the before/after comparison and the plots (`bazar.bench.report`,
`compare`, `plots`), from synthetic load results: nothing is run."""

from __future__ import annotations

import dataclasses
import json
from array import array
from pathlib import Path

import pytest
from rich.console import Console

from bazar.bench import compare, plots, report, write_gap
from bazar.bench.load import LoadResult, Tally, Window
from bazar.bench.procstat import CpuUse
from bazar.bench.scenarios import plan

MS = 1_000_000
CPU = CpuUse({"frontend": 0.1, "catalog-1": None}, {"frontend": 40.0, "catalog-1": None}, 0.1)


def tally(*latencies_ms: int, statuses: dict[int, int] | None = None) -> Tally:
    return Tally(array("q", [ms * MS for ms in latencies_ms]), dict(statuses or {}))


def rows(scenario: str, clients: int, tallies: dict[str, Tally]) -> list[report.RunResult]:
    (spec,) = plan(
        "http://127.0.0.1:9102",
        scenarios=[scenario],
        concurrency=[clients],
        duration_s=2.0,
        admin_token="token",
    )
    load = LoadResult(Window(0, 2_000 * MS), tallies, client_cpu_ns=500 * MS)
    return report.results_of(spec, load, CPU, load_average_1m=0.5)


def test_a_run_is_one_row_per_series_with_the_run_s_cpu() -> None:
    found = rows(
        "invalidation",
        2,
        {
            "write": tally(5, 6),
            "after-write": tally(2, 3),
            "hit": tally(1, 1),
            "no-cache": tally(1, 2, statuses={503: 1, 0: 1}),
        },
    )
    assert [r.label for r in found] == [
        "invalidation write",
        "invalidation after-write",
        "invalidation hit",
        "invalidation no-cache",
    ]
    no_cache = found[-1]
    assert no_cache.statuses == {"503": 1, "no_answer": 1}
    assert no_cache.non_2xx == 2
    assert report.answered(no_cache) == 1
    assert (no_cache.requests, no_cache.throughput_rps, no_cache.p50_ms) == (2, 1.0, 1.0)
    assert no_cache.client_cpu_percent == 25.0
    assert all(r.server_cpu_ms_per_request_total == 0.1 for r in found)


def test_info_hit_is_a_ratio_to_bare_at_the_same_clients() -> None:
    measured = [
        *rows("bare", 1, {"": tally(*[1] * 100)}),
        *rows("info-hit", 1, {"": tally(*[1] * 80)}),
        *rows("info-hit", 2, {"": tally(*[1] * 80)}),
        *rows("info-miss", 1, {"": tally(*[1] * 10)}),
    ]
    ratios = [r.bare_ratio for r in report.with_bare_ratios(measured)]
    assert ratios == [None, 0.8, None, None]


def failover_row() -> report.RunResult:
    kill = write_gap.Kill(write_gap.Target("catalog", "catalog-1", 4242))
    kill.at_ns = 500 * MS
    window = Window(0, 2_000 * MS)
    sent = array("q", [100 * MS, 600 * MS, 900 * MS])
    latencies = array("q", [1 * MS, 2 * MS, 3 * MS])
    codes = array("h", [200, 503, 200])
    detail = write_gap.report(kill, 0.5, window, sent, latencies, codes)
    (row,) = rows("failover", 4, {"": Tally(latencies, {503: 1}, sent, codes)})
    return dataclasses.replace(row, failover=detail)


def test_tables_render_every_row(tmp_path: Path) -> None:
    measured = [*rows("info-hit", 1, {"": tally(1, 2)}), failover_row()]
    console = Console(width=200, record=True)
    for table in (
        report.results_table(measured),
        report.cpu_table(measured),
        report.failover_table(measured),
    ):
        console.print(table)
    text = console.export_text()
    assert "info-hit" in text
    assert "catalog-1 (4242)" in text
    assert "503: 1" in text


def test_json_round_trips_into_compare(tmp_path: Path) -> None:
    path = tmp_path / "out" / "new.json"
    measured = [*rows("info-hit", 1, {"": tally(1, 2)}), failover_row()]
    report.write_results(path, {"command": "bazar bench"}, measured)
    document = json.loads(path.read_text())
    assert document["meta"] == {"command": "bazar bench"}
    timeline = document["results"][1]["failover"]["timeline"]
    assert {"start_ms", "ok", "failed"} == set(timeline[0])
    assert compare.read_results(path)[0]["server_cpu_ms_per_request"] == {
        "frontend": 0.1,
        "catalog-1": None,
    }


def test_compare_matches_rows_and_gives_ratios() -> None:
    old = [  # the first bench's format and names
        {
            "scenario": "info",
            "concurrency": 1,
            "p50_ms": 0.4,
            "p99_ms": 1.0,
            "throughput_rps": 2000,
        },
        {"scenario": "list", "concurrency": 1, "p50_ms": 1.0, "throughput_rps": 100},
    ]
    new = [
        {
            "scenario": "info-hit",
            "series": None,
            "concurrency": 1,
            "p50_ms": 0.2,
            "p99_ms": 1.0,
            "throughput_rps": 4000,
            "server_cpu_ms_per_request_total": 0.1,
        },
        {"scenario": "purchase", "series": None, "concurrency": 8, "p50_ms": 3.0},
    ]
    found = {c.key: c for c in compare.compare(old, new)}
    assert list(found) == [("info-hit", None, 1), ("purchase", None, 8), ("list", None, 1)]
    info = found[("info-hit", None, 1)].changes
    assert info["p50_ms"].ratio == pytest.approx(0.5)
    assert info["throughput_rps"].ratio == pytest.approx(2.0)
    assert info["p99_ms"].ratio == 1.0
    assert info["server_cpu_ms_per_request_total"].ratio is None
    assert found[("purchase", None, 8)].changes["p50_ms"] == compare.Change(None, 3.0)
    console = Console(width=200, record=True)
    console.print(compare.compare_table(list(found.values()), "old.json", "new.json"))
    assert "0.400 -> 0.200 (0.50x)" in console.export_text()


@pytest.mark.parametrize(
    "text", ['{"results": 3}', "[1, 2]", '[{"scenario": "info"}]', '{"meta": {}}']
)
def test_compare_refuses_what_is_not_a_results_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"x\.json"):
        compare.read_results(path)


def test_plots_are_written_for_every_family_and_the_failover(tmp_path: Path) -> None:
    measured = [
        *rows("info-hit", 1, {"": tally(1, 2, 3)}),
        *rows("info-miss", 1, {"": tally(2, 3, 4)}),
        *rows("info-hit", 4, {"": tally(1, 5, 9)}),
        *rows("purchase", 1, {"": tally()}),  # nothing measured: no line, no failure
        failover_row(),
    ]
    written = plots.write_plots(tmp_path / "plots", measured)
    assert sorted(p.name for p in written) == [
        "failover-catalog-4.png",
        "latency-cdf.png",
        "throughput.png",
    ]
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG")


def test_families_put_hits_and_misses_together() -> None:
    assert {plots.family(n) for n in ("bare", "info-hit", "info-miss")} == {"info"}
    assert {plots.family(n) for n in ("search-hit", "search-miss")} == {"search"}
    assert plots.family("invalidation") == "invalidation"


def test_the_admin_token_never_reaches_a_result_file() -> None:
    command = "bazar bench --admin-token s3cret --scenario purchase --admin-token=other"
    meta = report.header(command)
    assert "s3cret" not in meta["command"]
    assert "other" not in meta["command"]
    assert meta["command"].startswith("bazar bench --admin-token <redacted> --scenario purchase")
