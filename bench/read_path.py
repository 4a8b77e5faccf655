"""Is a replica's point read cheaper inline on the event loop or on a thread?

docs/design.md ("Stack") lets a point read run inline where a benchmark shows that it is faster
than a thread hop; this is that benchmark. It times `catalog.reads.read_book` on a real WAL
database (a) inline in a coroutine and (b) through a one-thread executor, as the writer uses,
with a writer committing (fsync) in the background the whole time.

Run: .venv/bin/python bench/read_path.py
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from bazar.catalog import machine as catalog
from bazar.catalog import reads as catalog_reads
from bazar.catalog import seed as catalog_seed
from bazar.replication.storage import Store

READS = 20_000


def writer(store: Store, stop: threading.Event) -> None:
    def bump(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE books SET stock = stock + 1 WHERE id = 2")
        conn.execute("COMMIT")

    while not stop.is_set():
        store.write_blocking(bump)


async def measure(store: Store) -> dict[str, list[float]]:
    executor = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()
    inline: list[float] = []
    hopped: list[float] = []
    for _ in range(READS):
        started = time.perf_counter_ns()
        catalog_reads.read_book(store.reader, 1)
        inline.append((time.perf_counter_ns() - started) / 1000)
        started = time.perf_counter_ns()
        await loop.run_in_executor(executor, catalog_reads.read_book, store.reader, 1)
        hopped.append((time.perf_counter_ns() - started) / 1000)
    executor.shutdown()
    return {"inline": inline, "thread hop": hopped}


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = Store(Path(directory) / "c" / "db", catalog.SCHEMA, catalog.TABLES)
        store.write_blocking(partial(catalog_seed.seed, books=catalog_seed.load_seed(None)))
        stop = threading.Event()
        background = threading.Thread(target=writer, args=(store, stop))
        background.start()
        try:
            results = asyncio.run(measure(store))
        finally:
            stop.set()
            background.join()
            store.close()
    for name, samples in results.items():
        samples.sort()
        p50 = statistics.median(samples)
        p99 = samples[int(len(samples) * 0.99)]
        print(f"{name:>10}: p50 {p50:6.1f} us  p99 {p99:6.1f} us  max {samples[-1]:8.1f} us")


if __name__ == "__main__":
    main()
