"""Order reads go on from the backup when the order primary dies under load.

Goal: full pages of orders and single orders are served by the order backup while the order
primary is dead, even though the backup then holds a staged entry it cannot resolve (a page
that the applied orders fill never needs the primary). Method: buyers run, the order primary
is killed (no restarts), and the acknowledged orders are read back, page by page from the
oldest and one by one, through the front end.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

from bazar.testing.cluster import Cluster, wait_until

BUYERS = 6


def test_backup_serves_order_pages_and_orders_while_the_primary_is_dead(tmp_path: Path) -> None:
    with Cluster(tmp_path / "c", no_cache=True) as cluster:
        cluster.restock(1, 100_000)
        acknowledged: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def buy() -> None:
            while not stop.is_set():
                status, body = cluster.json(
                    "POST",
                    "/purchase/1",
                    body=json.dumps({"quantity": 1}).encode(),
                    headers={
                        "Content-Type": "application/json",
                        "Idempotency-Key": uuid.uuid4().hex,
                    },
                )
                if status == 200:
                    with lock:
                        acknowledged.append(body["order"]["id"])

        buyers = [threading.Thread(target=buy) for _ in range(BUYERS)]
        for thread in buyers:
            thread.start()
        try:
            wait_until(lambda: len(acknowledged) >= 60, 30, "60 acknowledged purchases")
            primary = next(
                r for r in cluster.cluster_info()["order"]["replicas"] if r["name"] == "order-1"
            )
            os.kill(int(primary["pid"]), signal.SIGKILL)
            wait_until(
                lambda: cluster.cluster_info()["order"]["replicas"][0]["state"] == "down",
                10,
                "order-1 seen down",
            )
        finally:
            stop.set()
            for thread in buyers:
                thread.join(timeout=30)
        with lock:
            first = list(acknowledged[:40])
        pages: list[dict[str, Any]] = []
        after = ""
        for _ in range(4):  # 4 full pages of 10, from the oldest
            status, body = cluster.json("GET", f"/orders?limit=10{after}")
            assert status == 200, body
            assert len(body["data"]) == 10
            pages.extend(body["data"])
            after = "&after=" + body["next"]
        seen = {order["id"] for order in pages}
        assert len(seen) == 40
        for order_id in first[:10]:
            status, body = cluster.json("GET", f"/orders/{order_id}")
            assert status == 200, body
            assert body["data"]["id"] == order_id
