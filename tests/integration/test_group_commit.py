"""Group commit end to end: concurrent purchases share HTTP calls and replicated batches.

Many purchases sent at once must not each cost their own replicated write on each tier:
they travel together from the front end to the order primary and from there to the catalog,
and join one log entry per batch. The log positions (`last_seq` in `/cluster`) count the
entries; every purchase still gets its own order.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from bazar.testing.cluster import Cluster

BUYERS = 48


def last_seqs(cluster: Cluster) -> dict[str, int]:
    info = cluster.cluster_info()
    return {
        tier: max(int(r["last_seq"] or 0) for r in info[tier]["replicas"])
        for tier in ("catalog", "order")
    }


def test_concurrent_purchases_share_replicated_batches(cluster: Cluster) -> None:
    before = last_seqs(cluster)
    start = threading.Barrier(BUYERS)

    def buy(number: int) -> int:
        start.wait()
        status, _, body = cluster.request(
            "POST",
            "/purchase/1",
            body=json.dumps({"quantity": 1}).encode(),
            headers={"Content-Type": "application/json", "Idempotency-Key": f"group-{number}"},
        )
        assert status in (200, 409), body  # book 1 may run out: a refusal is an answer too
        return status

    with ThreadPoolExecutor(BUYERS) as pool:
        statuses = list(pool.map(buy, range(BUYERS)))
    after = last_seqs(cluster)
    sold = statuses.count(200)
    assert sold > 0
    # Each purchase that reached the catalog is one Sell there and (if sold) one order; had
    # each been its own replicated write, the logs would have grown by that many entries.
    assert after["catalog"] - before["catalog"] < BUYERS, (before, after)
    assert after["order"] - before["order"] < sold, (before, after, sold)


def test_each_primary_writes_its_intent_beside_the_batch(cluster: Cluster) -> None:
    """The primary's own fsync goes to its intent log while the backups stage (so the batch's
    COMMIT needs none): after a purchase, each tier's primary holds its last entry there."""
    status, _, body = cluster.request(
        "POST",
        "/purchase/2",
        body=json.dumps({"quantity": 1}).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": "intent-1"},
    )
    assert status == 200, body
    info = cluster.cluster_info()
    for tier in ("catalog", "order"):
        primary = next(r for r in info[tier]["replicas"] if r["role"] == "primary")
        with urllib.request.urlopen(primary["url"] + "/health", timeout=5) as answer:
            health = json.load(answer)["data"]  # its own position now (/cluster lags a lease)
        path = cluster.data_dir / primary["name"] / "intent.db"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            (last,) = db.execute("SELECT max(seq) FROM intent").fetchone()
        assert last == health["commit_seq"] >= 1, (tier, health, last)
