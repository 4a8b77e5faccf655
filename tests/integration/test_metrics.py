"""`GET /metrics` on every process (docs/contract.md §4), against a real 2+2 cluster: the front
end and every catalog and order replica answer without the cluster secret, in the Prometheus text
format that prometheus_client's own parser reads, and the numbers move with the traffic:
requests by route template, the primary's commit position, batch sizes, fsync times, and
the replication lag the primary reports for each backup.

Tests share one module-scoped cluster; each compares a scrape before and after its own
requests, so none depends on another's traffic (a replica's lease and replication traffic
goes to routes these tests do not count).
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bazar.testing.cluster import Cluster, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
LAG_DEADLINE_S = 10.0
DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


def scrape(cluster: Cluster, base: str | None = None) -> Samples:
    """One scrape without any credentials, parsed by prometheus_client."""
    status, headers, body = cluster.request("GET", "/metrics", base=base)
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain"), headers
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def labels_of(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for sample, labels in samples if sample == name]


def roles(cluster: Cluster, tier: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the tier's primary, one backup), as `/cluster` lists them."""
    replicas = {r["role"]: r for r in cluster.cluster_info()[tier]["replicas"]}
    return replicas["primary"], replicas["backup"]


def buy(cluster: Cluster, book_id: int) -> None:
    cluster.restock(book_id, 1)  # a stock of our own: other tests may have sold it out
    status, _, body = cluster.request(
        "POST",
        f"/purchase/{book_id}",
        body=json.dumps({"quantity": 1}).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex},
    )
    assert status == 200, body


def test_every_process_serves_metrics_without_the_secret(cluster: Cluster) -> None:
    bases = [cluster.url] + [
        replica["url"]
        for tier in ("catalog", "order")
        for replica in cluster.cluster_info()[tier]["replicas"]
    ]
    for base in bases:
        first = scrape(cluster, base)
        second = scrape(cluster, base)  # counts the first, as any request
        scraped = {"method": "GET", "route": "/metrics", "status": "200"}
        assert value(second, "bazar_requests_total", **scraped) == (
            value(first, "bazar_requests_total", **scraped) + 1
        ), base
        assert value(second, "bazar_request_seconds_count", route="/metrics") >= 1, base
    # Metrics need no secret; everything internal still does.
    for tier, route in (("catalog", "/books"), ("order", "/orders")):
        for replica in cluster.cluster_info()[tier]["replicas"]:
            for path in (route, "/internal/digest"):
                status, _ = cluster.json("GET", path, base=replica["url"])
                assert status == 401, (replica["name"], path)
                status, _ = cluster.internal("GET", replica["url"], path)
                assert status == 200, (replica["name"], path)


def test_frontend_counts_requests_by_route_template(cluster: Cluster) -> None:
    before = scrape(cluster)
    for book_id in (1, 2, 3):  # misses, then hits: both counted under one route
        for _ in range(2):
            assert cluster.request("GET", f"/info/{book_id}")[0] == 200
    assert cluster.request("GET", "/info/999999")[0] == 404
    assert cluster.request("GET", "/search/distributed")[0] == 200
    assert cluster.request("GET", "/no/such/route/42")[0] == 404
    after = scrape(cluster)

    def moved(route: str, status: str) -> float:
        name = "bazar_requests_total"
        labels = {"method": "GET", "route": route, "status": status}
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("/info/{id}", "200") == 6
    assert moved("/info/{id}", "404") == 1
    assert moved("/search/{topic:path}", "200") == 1
    assert moved("unmatched", "404") == 1
    routes = {labels["route"] for labels in labels_of(after, "bazar_requests_total")}
    assert not any(route.startswith("/info/") and "{" not in route for route in routes), routes
    count = "bazar_request_seconds_count"
    assert value(after, count, route="/info/{id}") >= value(before, count, route="/info/{id}") + 7
    assert value(after, "bazar_cache_hits_total") >= value(before, "bazar_cache_hits_total") + 3


def test_frontend_reports_each_tiers_epoch_and_view(cluster: Cluster) -> None:
    samples = scrape(cluster)
    info = cluster.cluster_info()
    for tier in ("catalog", "order"):
        assert value(samples, "bazar_view_epoch", tier=tier) == info[tier]["epoch"]
        assert value(samples, "bazar_view_primary", tier=tier, node=info[tier]["primary"]) == 1
        for replica in info[tier]["replicas"]:
            name = replica["name"]
            states = {
                labels["state"]: value(samples, "bazar_view_replica_state", **labels)
                for labels in labels_of(samples, "bazar_view_replica_state")
                if labels["node"] == name
            }
            assert states == {"in_sync": 1, "catching_up": 0, "down": 0}, (name, states)


@pytest.mark.parametrize(
    ("tier", "write_route"), [("catalog", "/internal/sell"), ("order", "/internal/purchase")]
)
def test_replicas_report_position_batches_fsync_and_lag(
    cluster: Cluster, tier: str, write_route: str
) -> None:
    primary, backup = roles(cluster, tier)
    before = {r["name"]: scrape(cluster, r["url"]) for r in (primary, backup)}
    buy(cluster, 4)
    after = {r["name"]: scrape(cluster, r["url"]) for r in (primary, backup)}
    first, then = before[primary["name"]], after[primary["name"]]
    me = {"tier": tier, "node": primary["name"]}

    def grew(samples: tuple[Samples, Samples], name: str, **labels: str) -> bool:
        return value(samples[1], name, **labels) > value(samples[0], name, **labels)

    assert value(then, "bazar_replica_role", **me, role="primary") == 1
    assert value(then, "bazar_replica_epoch", **me) == cluster.cluster_info()[tier]["epoch"]
    assert grew((first, then), "bazar_replica_commit_seq", **me)
    assert value(then, "bazar_replica_last_seq", **me) == value(
        then, "bazar_replica_commit_seq", **me
    )
    assert grew((first, then), "bazar_batch_commands_count", **me)
    assert grew((first, then), "bazar_fsync_seconds_count", **me, kind="commit")
    assert grew(
        (first, then), "bazar_requests_total", method="POST", route=write_route, status="200"
    )
    # The backup staged the entry (and said so) before the primary committed it.
    mine, theirs = before[backup["name"]], after[backup["name"]]
    other = {"tier": tier, "node": backup["name"]}
    assert value(theirs, "bazar_replica_role", **other, role="backup") == 1
    assert grew((mine, theirs), "bazar_stage_entries_count", **other)
    assert grew((mine, theirs), "bazar_fsync_seconds_count", **other, kind="stage")
    assert grew(
        (mine, theirs),
        "bazar_requests_total",
        method="POST",
        route="/internal/append",
        status="200",
    )
    assert labels_of(theirs, "bazar_replication_lag_entries") == []  # the primary's view only
    # Lag: one series per backup, on the primary, down to 0 once the backup has caught up.
    lag = labels_of(then, "bazar_replication_lag_entries")
    assert lag == [{**me, "peer": backup["name"]}], lag

    def caught_up() -> bool:
        samples = scrape(cluster, primary["url"])
        return value(samples, "bazar_replication_lag_entries", **me, peer=backup["name"]) == 0

    wait_until(caught_up, LAG_DEADLINE_S, f"{backup['name']} reported caught up")


def test_the_sample_dashboard_uses_only_metrics_that_exist(cluster: Cluster) -> None:
    buy(cluster, 5)  # so that every histogram has been observed somewhere
    bases = [cluster.url] + [
        replica["url"]
        for tier in ("catalog", "order")
        for replica in cluster.cluster_info()[tier]["replicas"]
    ]
    served = {name for base in bases for name, _ in scrape(cluster, base)}
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    used = {name for expr in expressions for name in re.findall(r"bazar_[a-z_]+", expr)}
    assert used, expressions
    assert used <= served, sorted(used - served)
