"""The front-end cache on a real cluster: versioned invalidation closes the late-fill race,
invalidation is selective, the size bound holds, and `--no-cache` serves every read from a
replica."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bazar.testing.cluster import Cluster, wait_until


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("hooked"), test_hooks=True).start()
    try:
        yield running
    finally:
        running.stop()


def cache_stats(cluster: Cluster) -> dict[str, Any]:
    stats: dict[str, Any] = cluster.cluster_info()["cache"]
    return stats


def stock(cluster: Cluster, book_id: int) -> int:
    status, body = cluster.json("GET", f"/info/{book_id}")
    assert status == 200, body
    return int(body["data"]["stock"])


def buy(cluster: Cluster, book_id: int, quantity: int = 1) -> None:
    status, body = cluster.json(
        "POST",
        f"/purchase/{book_id}",
        body=json.dumps({"quantity": quantity}).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex},
    )
    assert status == 200, body


def delay_reads(cluster: Cluster, base: str, book_id: int, delay_ms: int, count: int) -> None:
    status, body = cluster.json(
        "POST",
        "/internal/test/read-delay",
        base=base,
        body=json.dumps({"book_id": book_id, "delay_ms": delay_ms, "count": count}).encode(),
        headers={"Authorization": f"Bearer {cluster.secret}", "Content-Type": "application/json"},
    )
    assert status == 200, body


def waiting_reads(cluster: Cluster, base: str) -> int:
    status, body = cluster.internal("GET", base, "/internal/test/read-delay")
    assert status == 200, body
    return int(body["waiting"])


def test_late_fill_after_an_invalidation_is_refused(hooked: Cluster) -> None:
    """A read of book 5 misses, reads its row on a replica, and is held there; meanwhile a
    purchase of book 5 commits and invalidates; the held read then returns the old stock. The
    cache must refuse that late fill (its version is older than the invalidation), so the
    next read shows the new stock."""
    urls = list(hooked.replica_urls("catalog").values())
    before = stock(hooked, 5)
    buy(hooked, 5)  # book 5 leaves the cache: the next read is a miss
    for url in urls:
        delay_reads(hooked, url, 5, delay_ms=5000, count=1)
    late: dict[str, int] = {}
    reader = threading.Thread(target=lambda: late.update(value=stock(hooked, 5)))
    reader.start()
    held = lambda: sum(waiting_reads(hooked, url) for url in urls) == 1  # noqa: E731
    wait_until(held, 10, "a held read")
    rejected = cache_stats(hooked)["rejected_fills"]
    buy(hooked, 5)  # well within the front end's read timeout (500 ms): a few ms
    for url in urls:
        delay_reads(hooked, url, 5, delay_ms=0, count=0)  # release the held read, disarm
    reader.join(timeout=15)
    assert late["value"] == before - 1  # it read the row before the second purchase
    assert cache_stats(hooked)["rejected_fills"] == rejected + 1
    assert stock(hooked, 5) == before - 2
    assert stock(hooked, 5) == before - 2


def test_a_purchase_invalidates_only_what_shows_its_book(hooked: Cluster) -> None:
    for path in ("/info/1", "/info/3", "/search/distributed", "/search/undergraduate"):
        assert hooked.json("GET", path)[0] == 200
    assert hooked.json("GET", "/info/1")[0] == 200
    before = cache_stats(hooked)
    buy(hooked, 3)
    after_buy = cache_stats(hooked)
    assert after_buy["invalidations"] == before["invalidations"] + 1
    # book 3 and the undergraduate topic are gone; book 1 and distributed stay.
    assert after_buy["entries"] == before["entries"] - 2
    assert hooked.json("GET", "/info/1")[0] == 200
    assert hooked.json("GET", "/search/Distributed")[0] == 200
    hits = cache_stats(hooked)
    assert hits["hits"] == after_buy["hits"] + 2
    assert hits["misses"] == after_buy["misses"]


def test_topics_differing_only_in_case_share_one_entry(hooked: Cluster) -> None:
    first = hooked.json("GET", "/search/UNDERGRADUATE%20school")
    before = cache_stats(hooked)
    second = hooked.json("GET", "/search/undergraduate%20School")
    assert first == second
    assert cache_stats(hooked)["hits"] == before["hits"] + 1


def backend_reads(cluster: Cluster) -> float:
    status, _, text = cluster.request("GET", "/metrics")
    assert status == 200
    for line in text.decode().splitlines():
        if line.startswith('bazar_backend_reads_total{outcome="ok",tier="catalog"}'):
            return float(line.split()[-1])
    return 0.0


def test_a_miss_costs_exactly_one_backend_read_and_a_hit_none(hooked: Cluster) -> None:
    buy(hooked, 6)  # book 6 leaves the cache
    before = backend_reads(hooked)
    stock(hooked, 6)  # miss
    assert backend_reads(hooked) == before + 1
    for _ in range(5):
        stock(hooked, 6)  # hits
    assert backend_reads(hooked) == before + 1


def test_unknown_books_and_failed_reads_are_not_cached(hooked: Cluster) -> None:
    before = cache_stats(hooked)["entries"]
    assert hooked.json("GET", "/info/999")[0] == 404
    assert hooked.json("GET", "/info/999")[0] == 404
    assert cache_stats(hooked)["entries"] == before


def test_cache_size_bound_holds(tmp_path: Path) -> None:
    with Cluster(tmp_path / "c", cache_entries=3) as cluster:
        for book_id in range(1, 8):
            assert cluster.json("GET", f"/info/{book_id}")[0] == 200
        assert cache_stats(cluster)["entries"] == 3
        before = cache_stats(cluster)
        assert cluster.json("GET", "/info/7")[0] == 200  # most recent: still cached
        assert cluster.json("GET", "/info/1")[0] == 200  # evicted first: a miss
        after = cache_stats(cluster)
        assert (after["hits"], after["misses"]) == (before["hits"] + 1, before["misses"] + 1)


def test_entries_expire_after_their_ttl(tmp_path: Path) -> None:
    with Cluster(tmp_path / "c", cache_ttl_ms=200) as cluster:
        assert cluster.json("GET", "/info/4")[0] == 200
        assert cache_stats(cluster)["entries"] == 1

        def expired() -> bool:
            misses = cache_stats(cluster)["misses"]
            cluster.json("GET", "/info/4")
            return bool(cache_stats(cluster)["misses"] == misses + 1)

        wait_until(expired, 5, "the entry of book 4 expired")


def test_no_cache_serves_every_read_from_a_replica(tmp_path: Path) -> None:
    with Cluster(tmp_path / "c", no_cache=True) as cluster:
        for _ in range(5):
            assert cluster.json("GET", "/info/2")[0] == 200
            assert cluster.json("GET", "/search/systems")[0] == 200
        stats = cache_stats(cluster)
        assert stats["enabled"] is False
        assert (stats["entries"], stats["hits"]) == (0, 0)
        status, _, metrics = cluster.request("GET", "/metrics")
        assert status == 200
        assert b"bazar_cache_hits_total 0.0" in metrics
