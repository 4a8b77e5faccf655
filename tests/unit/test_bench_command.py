"""`bazar bench` as a command (`bazar.bench.command`, its wiring in `bazar.cli`).

The command line is checked with `bench_command` replaced by a recorder; the baseline run
starts the real bare server and two real load processes for a fraction of a second (the
load against a scripted front end is in `test_client.py`); `--compare` reads two files.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bazar import cli
from bazar.bench import baseline as baseline_module
from bazar.bench import command, scenarios
from bazar.bench.baseline import Baseline
from bazar.config import ADMIN_TOKEN_ENV


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def record(url: str, **options: Any) -> int:
        calls.append({"url": url, **options})
        return 0

    monkeypatch.setattr(command, "bench_command", record)
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    return calls


def test_every_option_reaches_the_bench(recorded: list[dict[str, Any]], tmp_path: Path) -> None:
    arguments = ["bench", "--url", "http://127.0.0.1:9102", "--scenario", "info", "failover"]
    arguments += ["--concurrency", "1", "16", "--duration", "2", "--warmup", "0"]
    arguments += ["--processes", "2", "--baseline", "--failover-tier", "order"]
    arguments += ["--kill-after", "0.5", "--output", "o.json", "--plots", "plots"]
    arguments += ["--admin-token", "secret"]
    assert cli.run(arguments) == 0
    (call,) = recorded
    assert call["url"] == "http://127.0.0.1:9102"
    assert call["scenarios"] == ["info", "failover"]
    assert call["concurrency"] == [1, 16]
    assert (call["duration_s"], call["warmup_s"], call["processes"]) == (2.0, 0.0, 2)
    assert call["baseline"] is True
    assert call["failover_options"] == scenarios.FailoverOptions("order", 0.5)
    assert (call["output"], call["plots"], call["admin_token"]) == ("o.json", "plots", "secret")
    assert call["command"].startswith("bazar bench --url http://127.0.0.1:9102")


def test_default_scenarios_write_only_with_a_token(
    recorded: list[dict[str, Any]], tmp_path: Path
) -> None:
    assert cli.run(["bench", "--data-dir", str(tmp_path)]) == 0
    (tmp_path / "admin.token").write_text("from-file\n")
    assert cli.run(["bench", "--data-dir", str(tmp_path)]) == 0
    without, with_token = recorded
    assert without["scenarios"] == list(scenarios.DEFAULT_SCENARIOS)
    assert without["admin_token"] is None
    assert with_token["scenarios"] == [
        *scenarios.DEFAULT_SCENARIOS,
        *scenarios.DEFAULT_WRITE_SCENARIOS,
    ]
    assert with_token["admin_token"] == "from-file"
    assert "failover" not in with_token["scenarios"]  # it kills a replica: only when asked


@pytest.mark.parametrize(
    "bad",
    [
        ["--concurrency", "0"],
        ["--duration", "0"],
        ["--warmup", "-1"],
        ["--kill-after", "nan"],
        ["--scenario", "nope"],
        ["--processes", "x"],
    ],
)
def test_bad_options_are_usage_errors(recorded: list[dict[str, Any]], bad: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.run(["bench", *bad])
    assert caught.value.code == 2
    assert not recorded


def write(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text(json.dumps({"meta": {}, "results": rows}))
    return str(path)


def test_compare_prints_before_and_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = {"scenario": "purchase", "series": None, "concurrency": 32, "throughput_rps": 800.0}
    old = write(tmp_path / "old.json", [row])
    new = write(tmp_path / "new.json", [{**row, "throughput_rps": 1600.0}])
    assert cli.run(["bench", "--compare", old, new]) == 0
    out = capsys.readouterr().out
    assert "purchase" in out
    assert "800 -> 1,600 (2.00x)" in out


def test_compare_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    new = write(tmp_path / "new.json", [])
    assert command.compare_command(str(tmp_path / "missing.json"), new) == 2


def test_the_baseline_is_measured_in_several_processes_and_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []
    running = baseline_module.running_baseline

    @contextlib.contextmanager
    def spy() -> Iterator[Baseline]:
        with running() as baseline:
            started.append(baseline.pid)
            yield baseline

    monkeypatch.setattr(command, "running_baseline", spy)
    output = tmp_path / "bare.json"
    status = command.bench_command(
        "http://127.0.0.1:1",  # nothing there: `bare` alone needs no front end
        scenarios=[],
        baseline=True,
        concurrency=[3],
        processes=2,
        duration_s=0.3,
        warmup_s=0.0,
        admin_token=None,
        output=str(output),
    )
    assert status == 0
    (row,) = json.loads(output.read_text())["results"]
    assert (row["scenario"], row["concurrency"], row["processes"]) == ("bare", 3, 2)
    assert row["requests"] > 0
    assert row["non_2xx"] == 0
    assert row["client_cpu_percent"] > 0
    assert set(row["server_cpu_ms_per_request"]) == {"bare"}
    (pid,) = started
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
