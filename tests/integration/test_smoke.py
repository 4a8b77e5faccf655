"""The cluster starts from the CLI, answers, and stops by process group."""

from __future__ import annotations

from bazar.testing.cluster import Cluster


def test_cluster_serves_initial_catalog(cluster: Cluster) -> None:
    status, body = cluster.json("GET", "/info")
    assert status == 200
    assert [book["id"] for book in body["data"]] == [1, 2, 3, 4, 5, 6, 7]


def test_cluster_reports_two_replicas_per_tier(cluster: Cluster) -> None:
    info = cluster.cluster_info()
    for tier in ("catalog", "order"):
        assert info[tier]["epoch"] == 1
        assert info[tier]["primary"] == f"{tier}-1"
        assert [r["state"] for r in info[tier]["replicas"]] == ["in_sync", "in_sync"]
