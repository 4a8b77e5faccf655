"""Every replica answers health checks in Patroni's manner, without the secret
(docs/contract.md §4):
`GET /health` 200 while it serves in the current view, `/primary` 200 only on the primary,
`/replica` 200 only on an in-sync backup; each body `{"data": {name, role, state, epoch,
last_seq, commit_seq}}`, the same with 503."""

from __future__ import annotations

import json

import pytest

from bazar.testing.cluster import Cluster

TIERS = ("catalog", "order")
FIELDS = {"name", "role", "serving", "epoch", "last_seq", "commit_seq"}


def check(cluster: Cluster, url: str, path: str) -> tuple[int, dict[str, object]]:
    status, headers, body = cluster.request("GET", path, base=url)
    assert headers["content-type"].startswith("application/json"), headers
    data: dict[str, object] = json.loads(body)["data"]
    assert set(data) == FIELDS, data
    return status, data


@pytest.mark.parametrize("tier", TIERS)
def test_primary_and_backup_answer_their_health_checks(cluster: Cluster, tier: str) -> None:
    info = cluster.cluster_info()[tier]
    for replica in info["replicas"]:
        url = replica["url"]
        primary = replica["name"] == info["primary"]
        status, data = check(cluster, url, "/health")
        assert (status, data["serving"], data["epoch"]) == (200, True, info["epoch"]), data
        assert data["role"] == ("primary" if primary else "backup"), data
        assert check(cluster, url, "/primary")[0] == (200 if primary else 503)
        assert check(cluster, url, "/replica")[0] == (503 if primary else 200)
        assert check(cluster, url, "/health/")[0] == 200  # a trailing slash, no redirect


def test_health_checks_need_no_secret_but_internal_routes_do(cluster: Cluster) -> None:
    url = cluster.cluster_info()["catalog"]["replicas"][0]["url"]
    assert cluster.request("GET", "/health", base=url)[0] == 200
    assert cluster.request("GET", "/internal/digest", base=url)[0] == 401
