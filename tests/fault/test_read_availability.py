"""Reads survive a dead or paused catalog replica.

Goal: with one catalog replica killed (kill -9) or paused (SIGSTOP), reads through the front
end keep succeeding (zero failed reads), and the replica serves again once restarted or
continued. Method: a cluster without cache (every read reaches a replica), 8 client threads
reading books, topics and the list in a loop; the nemesis acts on the replica's pid from
`/cluster`; every read's status is recorded and none may differ from 200.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from bazar.testing.cluster import Cluster, wait_until
from bazar.testing.workload import ReadLoad, read_load

CLIENTS = 8
PATHS = ["/info/1", "/info/4", "/info/7", "/info", "/search/distributed", "/search/school"]


def replica(cluster: Cluster, name: str) -> dict[str, object]:
    info = cluster.cluster_info()
    return next(r for r in info["catalog"]["replicas"] if r["name"] == name)


def serving(cluster: Cluster, name: str) -> bool:
    """In sync in the front end's view, and answering reads itself."""
    entry = replica(cluster, name)
    if entry["state"] != "in_sync":
        return False
    status, _ = cluster.internal("GET", str(entry["url"]), "/books/1")
    return status == 200


def reads_go_on(load: ReadLoad, more: int) -> None:
    start = load.count()
    wait_until(lambda: load.count() >= start + more, 30, f"{more} more reads")


@pytest.mark.parametrize("name", ["catalog-1", "catalog-2"])
def test_kill_9_of_a_catalog_replica_fails_no_read(tmp_path: Path, name: str) -> None:
    with Cluster(tmp_path / "c", no_cache=True, restart=True) as cluster:
        wait_until(
            lambda: serving(cluster, "catalog-1") and serving(cluster, "catalog-2"),
            10,
            "both catalog replicas serving",
        )
        pid = int(str(replica(cluster, name)["pid"]))
        with read_load(cluster, PATHS, CLIENTS) as load:
            reads_go_on(load, 200)
            os.kill(pid, signal.SIGKILL)
            reads_go_on(load, 500)
            wait_until(
                lambda: replica(cluster, name)["pid"] != pid and serving(cluster, name),
                20,
                f"{name} restarted and serving",
            )
            reads_go_on(load, 200)
        assert load.failures == []
        assert load.reads >= 900


def test_sigstop_of_a_catalog_replica_for_3_s_fails_no_read(tmp_path: Path) -> None:
    with Cluster(tmp_path / "c", no_cache=True) as cluster:
        wait_until(lambda: serving(cluster, "catalog-2"), 10, "catalog-2 serving")
        pid = int(str(replica(cluster, "catalog-2")["pid"]))
        with read_load(cluster, PATHS, CLIENTS) as load:
            reads_go_on(load, 200)
            os.kill(pid, signal.SIGSTOP)
            try:
                paused_at = time.monotonic()
                wait_until(
                    lambda: replica(cluster, "catalog-2")["state"] == "down",
                    5,
                    "catalog-2 seen down",
                )
                reads_go_on(load, 300)
                wait_until(lambda: time.monotonic() - paused_at >= 3, 10, "3 s of pause")
            finally:
                os.kill(pid, signal.SIGCONT)
            wait_until(lambda: serving(cluster, "catalog-2"), 10, "catalog-2 serving again")
            reads_go_on(load, 200)
        assert load.failures == []
