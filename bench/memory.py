"""Is every process's memory flat under a long mixed load (docs/contract.md §6)?

Starts a fresh 2+2 cluster (`bazar.testing.cluster`), runs `bazar bench --scenario mixed`
(90 % cache-hit reads, 10 % purchases) for `--duration` seconds, and samples the resident set
(`VmRSS` of /proc/<pid>/status) of the front end and every replica at the start, every
`--every` seconds, and at the end. Nothing is asserted: a leak shows as a steady climb after
the first minute's warm-up (caches, connection pools, the allocator's arenas).

Run: .venv/bin/python bench/memory.py --duration 600 --output /tmp/bazar-memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bazar.bench.command import cluster_data, frontend_pid, server_pids
from bazar.testing.cluster import Cluster


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def pids(cluster: Cluster) -> dict[str, int]:
    found = server_pids(cluster_data(cluster.url), frontend_pid(cluster.url))
    return {name: pid for name, pid in found.items() if pid is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--every", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bazar-memory-") as scratch:
        cluster = Cluster(Path(scratch) / "data").start()
        try:
            processes = pids(cluster)
            token = cluster.admin_token
            command = [sys.executable, "-m", "bazar", "bench", "--url", cluster.url]
            command += ["--admin-token", token, "--scenario", "mixed", "--warmup", "0"]
            command += ["--concurrency", str(args.concurrency), "--duration", str(args.duration)]
            command += ["--output", str(args.output.with_suffix(".bench.json"))]
            samples: list[dict[str, object]] = []
            started = time.monotonic()
            load = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=dict(os.environ))
            while load.poll() is None:
                elapsed = round(time.monotonic() - started)
                samples.append({"t_s": elapsed, **{n: rss_kib(p) for n, p in processes.items()}})
                print(samples[-1], flush=True)
                deadline = time.monotonic() + args.every
                while load.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.5)
            elapsed = round(time.monotonic() - started)
            samples.append({"t_s": elapsed, **{n: rss_kib(p) for n, p in processes.items()}})
            print(samples[-1], flush=True)
        finally:
            cluster.stop()
    args.output.write_text(json.dumps({"rss_kib": samples}, indent=1) + "\n")
    first, last = samples[0], samples[-1]
    print(f"{'process':<10} {'start MiB':>10} {'end MiB':>10}")
    for name in processes:
        start, end = first[name], last[name]
        if isinstance(start, int) and isinstance(end, int):
            print(f"{name:<10} {start / 1024:>10.1f} {end / 1024:>10.1f}")


if __name__ == "__main__":
    main()
