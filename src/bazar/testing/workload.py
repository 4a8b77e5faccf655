"""Workload pieces shared by integration and fault tests: custom catalog files and a
background read load that records every failed read."""

from __future__ import annotations

import http.client
import json
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from bazar.testing.cluster import Cluster

CLIENT_TIMEOUT_S = 10.0


def write_catalog(path: Path, stocks: Mapping[int, int], topic: str) -> Path:
    """A catalog file of books `Book <id>` in one topic, cost 10, with these stocks."""
    books = [
        {"id": book_id, "title": f"Book {book_id}", "topic": topic, "stock": stock, "cost": 10}
        for book_id, stock in sorted(stocks.items())
    ]
    path.write_text(json.dumps(books))
    return path


class ReadLoad:
    """`clients` threads reading `paths` in a loop until stopped; counts reads and keeps
    every failure (any status but 200, or no answer)."""

    def __init__(self, cluster: Cluster, paths: Sequence[str], clients: int) -> None:
        self.cluster = cluster
        self.paths = list(paths)
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.reads = 0
        self.failures: list[tuple[str, int, bytes]] = []
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(clients)]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stopped.is_set():
            path = rng.choice(self.paths)
            try:
                status, _, body = self.cluster.request("GET", path, timeout_s=CLIENT_TIMEOUT_S)
            except (OSError, http.client.HTTPException) as error:
                status, body = 0, repr(error).encode()
            with self.lock:
                self.reads += 1
                if status != 200:
                    self.failures.append((path, status, body[:200]))

    def count(self) -> int:
        with self.lock:
            return self.reads

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=30)


@contextmanager
def read_load(cluster: Cluster, paths: Sequence[str], clients: int) -> Iterator[ReadLoad]:
    load = ReadLoad(cluster, paths, clients)
    load.start()
    try:
        yield load
    finally:
        load.stop()
