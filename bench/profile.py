"""Where every process spends its CPU under one `bazar bench` scenario: py-spy on all of them.

Starts a fresh 2+2 cluster (`bazar.testing.cluster`), attaches `py-spy record --gil` (only
samples that hold the GIL: Python CPU, not waiting) to the front end and every replica, runs
`bazar bench --scenario S --concurrency N`, and prints per process: the CPU seconds from /proc,
the share of samples in the event loop's own C code, and the top frames by self time and the
top `bazar` frames by inclusive time. Raw collapsed stacks stay in `--out` for flame graphs.

Run (as root, py-spy needs ptrace):
    .venv/bin/python bench/profile.py --scenario purchase --concurrency 32 --out /tmp/bazar-prof
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

from bazar.bench.command import cluster_data, frontend_pid, server_pids
from bazar.bench.procstat import CLOCK_TICKS_PER_S, cpu_ticks
from bazar.testing.cluster import Cluster

RATE_HZ = 200


def pids(cluster: Cluster) -> dict[str, int]:
    found = server_pids(cluster_data(cluster.url), frontend_pid(cluster.url))
    return {name: pid for name, pid in found.items() if pid is not None}


def spy_command(py_spy: Path, pid: int, duration_s: float, output: Path) -> list[str]:
    return [
        *(str(py_spy), "record", "--pid", str(pid), "--gil", "--nonblocking"),
        *("--rate", str(RATE_HZ), "--duration", str(int(duration_s) + 1)),
        *("--format", "raw", "--output", str(output)),
    ]


def summary(raw: Path, top: int) -> list[str]:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = stack.split(";")
        self_time[frames[-1]] += samples
        for frame in set(frames):
            if "bazar/" in frame:
                inclusive[frame] += samples
    if not total:
        return ["  (no samples)"]
    lines = [f"  {total} samples ({total / RATE_HZ:.2f} s holding the GIL)"]
    lines += [f"  self {n / total:6.1%}  {f}" for f, n in self_time.most_common(top)]
    lines += [f"  incl {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="purchase")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).parent / "py-spy"
    with tempfile.TemporaryDirectory(prefix="bazar-prof-") as scratch:
        cluster = Cluster(Path(scratch) / "data").start()
        try:
            processes = pids(cluster)
            token = cluster.admin_token
            before = {name: cpu_ticks(pid) for name, pid in processes.items()}
            spies = [
                subprocess.Popen(
                    spy_command(py_spy, pid, args.duration, args.out / f"{name}.txt"),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for name, pid in processes.items()
            ]
            bench = [sys.executable, "-m", "bazar", "bench", "--url", cluster.url]
            bench += ["--admin-token", token, "--scenario", args.scenario, "--warmup", "0"]
            bench += ["--concurrency", str(args.concurrency), "--duration", str(args.duration)]
            subprocess.run(bench, check=True)
            after = {name: cpu_ticks(pid) for name, pid in processes.items()}
            for spy in spies:
                spy.wait()
        finally:
            cluster.stop()
    for name in processes:
        start, end = before[name], after[name]
        cpu = (
            "?"
            if start is None or end is None
            else f"{(end - start) / CLOCK_TICKS_PER_S:.2f} s CPU"
        )
        print(f"== {name}: {cpu} (/proc)")
        print("\n".join(summary(args.out / f"{name}.txt", args.top)))


if __name__ == "__main__":
    main()
