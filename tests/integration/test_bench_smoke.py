"""`bazar bench` runs end to end against a real cluster: exit 0, a JSON file of the expected
shape, the PNG plots. A smoke test only: nothing about timings is asserted (benchmarks never
run under pytest); one second per run, a second of warm-up dropped to a tenth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bazar.testing.cluster import Cluster

SCENARIOS = ("info-hit", "info-miss", "purchase")
CONCURRENCY = (1, 2)


def test_bench_writes_json_and_plots(cluster: Cluster, tmp_path: Path) -> None:
    output, plots = tmp_path / "bench.json", tmp_path / "plots"
    arguments = ["bench", "--url", cluster.url, "--admin-token", cluster.admin_token]
    arguments += ["--scenario", *SCENARIOS, "--concurrency", *map(str, CONCURRENCY)]
    arguments += ["--duration", "1", "--warmup", "0.1"]
    arguments += ["--output", str(output), "--plots", str(plots)]
    done = subprocess.run(
        [sys.executable, "-m", "bazar", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(output.read_text())
    assert document["meta"]["command"].startswith("bazar bench --url")
    results = document["results"]
    expected = [(s, c) for s in SCENARIOS for c in CONCURRENCY]
    assert [(r["scenario"], r["concurrency"]) for r in results] == expected
    for row in results:
        assert row["requests"] > 0
        assert row["requests"] >= row["non_2xx"] >= 0
        assert row["p50_ms"] <= row["p99_ms"] <= row["p999_ms"] <= row["max_ms"]
        assert row["client_cpu_percent"] >= 0
        processes = set(row["server_cpu_ms_per_request"])
        assert processes == {"frontend", "catalog-1", "catalog-2", "order-1", "order-2"}
        assert row["server_cpu_ms_per_request"]["frontend"] is not None  # found by its socket
    assert sorted(path.name for path in plots.iterdir()) == ["latency-cdf.png", "throughput.png"]
    for path in plots.iterdir():
        assert path.read_bytes().startswith(b"\x89PNG")
