"""What an fsync costs here: a one-row SQLite commit in WAL mode with `synchronous=FULL` (what
every replicated write pays, on the primary and on each backup) against `NORMAL` (no fsync at
commit), and a bare `os.fsync` of a 4 KiB append. It bounds what overlapping the primary's
fsync with the backups' staging could save (docs/results.md, issue 8).

Run: .venv/bin/python bench/fsync.py [--dir /tmp] [--count 1000]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def timed(action: Callable[[], None], count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)


def sqlite_commits(path: Path, synchronous: str, count: int) -> list[float]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, entry BLOB)")
    row = b"x" * 300  # about one replicated entry of a small batch

    def commit() -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO log (entry) VALUES (?)", (row,))
        db.execute("COMMIT")

    try:
        return timed(commit, count)
    finally:
        db.close()


def raw_fsyncs(path: Path, count: int) -> list[float]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = b"x" * 4096

    def append() -> None:
        os.write(fd, block)
        os.fsync(fd)

    try:
        return timed(append, count)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        root = Path(scratch)
        rows = [
            (
                "SQLite commit, synchronous=FULL",
                sqlite_commits(root / "full.db", "FULL", args.count),
            ),
            (
                "SQLite commit, synchronous=NORMAL",
                sqlite_commits(root / "normal.db", "NORMAL", args.count),
            ),
            ("os.fsync of a 4 KiB append", raw_fsyncs(root / "raw", args.count)),
        ]
    print(f"{'ms':<36} {'p50':>7} {'p90':>7} {'p99':>7} {'mean':>7}")
    for name, times in rows:
        p50, p90, p99 = (times[int(q * (len(times) - 1))] for q in (0.5, 0.9, 0.99))
        print(f"{name:<36} {p50:7.3f} {p90:7.3f} {p99:7.3f} {statistics.fmean(times):7.3f}")


if __name__ == "__main__":
    main()
