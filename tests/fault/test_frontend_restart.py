"""A front end that restarts in the middle of a catalog write does not cache the old value.

Goal: the catalog primary invalidates the front end's cache before its COMMIT; if that front end
dies before the COMMIT, the new one must still refuse to cache the old value
(docs/contract.md §3.2). Method: pause the catalog backup so that a purchase stays between its
invalidation and its COMMIT; once the first front end has taken the invalidation, kill -9 it; read
the book through the restarted front end; continue the backup so the purchase commits; then every
read through the front end must show the committed stock.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

from bazar.testing.cluster import Cluster, wait_until


def cache(cluster: Cluster) -> dict[str, Any]:
    status, body = cluster.json("GET", "/cluster")
    assert status == 200, body
    stats: dict[str, Any] = body["data"]["cache"]
    return stats


def committed_stock(cluster: Cluster, url: str, book_id: int) -> int:
    status, body = cluster.internal("GET", url, f"/books/{book_id}")
    assert status == 200, body
    return int(body["data"]["stock"])


def test_restarted_front_end_does_not_cache_a_value_an_open_write_replaces(
    tmp_path: Path,
) -> None:
    with Cluster(tmp_path / "c", restart=True) as cluster:
        urls = cluster.replica_urls("catalog")
        backup_pid = int(
            next(
                r["pid"]
                for r in cluster.cluster_info()["catalog"]["replicas"]
                if r["name"] == "catalog-2"
            )
        )
        before = committed_stock(cluster, urls["catalog-1"], 3)
        invalidations = cache(cluster)["invalidations"]
        key = uuid.uuid4().hex
        purchase = json.dumps({"quantity": 1}).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        os.kill(backup_pid, signal.SIGSTOP)
        try:

            def buy_once() -> None:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    cluster.request(
                        "POST", "/purchase/3", body=purchase, headers=headers, timeout_s=15
                    )  # its front end dies under it: the answer is lost, by design

            buyer = threading.Thread(target=buy_once)
            buyer.start()
            wait_until(
                lambda: cache(cluster)["invalidations"] > invalidations,
                10,
                "the first front end took the invalidation",
            )
            os.kill(frontend_pid_of(cluster), signal.SIGKILL)
            wait_until(lambda: cluster.request("GET", "/cluster")[0] == 200, 20, "a new front end")
            status, body = cluster.json("GET", "/info/3")
            assert status == 200, body
            assert body["data"]["stock"] == before  # not committed yet: the old value
        finally:
            os.kill(backup_pid, signal.SIGCONT)
        buyer.join(timeout=20)
        wait_until(
            lambda: committed_stock(cluster, urls["catalog-1"], 3) == before - 1,
            20,
            "the purchase committed",
        )
        status, body = cluster.json("POST", "/purchase/3", body=purchase, headers=headers)
        assert status == 200, body  # the retry finds the purchase, sold once
        assert committed_stock(cluster, urls["catalog-1"], 3) == before - 1
        for _ in range(3):
            status, body = cluster.json("GET", "/info/3")
            assert (status, body["data"]["stock"]) == (200, before - 1)


def frontend_pid_of(cluster: Cluster) -> int:
    """The pid listening on the front end's port, from /proc (the front end is a child of
    `bazar up`, which does not report its own pid)."""
    port_hex = f"{cluster.port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(":" + port_hex) and fields[3] == "0A":
            inodes.add(fields[9])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(entry.name)
        except OSError:
            continue
    raise AssertionError("no process listens on the front end's port")
