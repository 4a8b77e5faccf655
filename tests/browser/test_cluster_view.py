"""The live cluster view at `/` follows faults caused outside the page.

Goal: what a class watches in the cluster view is what happens: a replica killed with
SIGKILL shows as `down` within a few seconds; when the primary is killed, the view shows the
promoted backup and the new epoch; a replica restarted by hand comes back `in_sync`. Method:
a 2+2 cluster without automatic restarts; the test kills replicas by the pid `/cluster`
reports and restarts them with `bazar serve`, as an operator would (`served_by_hand`); the
page is only watched, through its `data-testid`s, and photographed at each step.
"""

from __future__ import annotations

import os
import re
import signal

from playwright.sync_api import Locator, Page, expect

from bazar.testing.browser import Steps
from bazar.testing.cluster import Cluster, served_by_hand

UI_MS = 5_000
NUMBER = re.compile(r"^\d+\.\d$")
FAULT_MS = 15_000
"""A lease expiry (about 1.1 s), a page refresh (1 s), or a restart and catch-up, on a
shared and busy machine."""


def replica_row(page: Page, name: str) -> Locator:
    return page.locator(f'[data-testid="replica-row"][data-name="{name}"]')


def tier_view(page: Page, tier: str) -> Locator:
    return page.locator(f'[data-testid="tier-{tier}"]')


def pid_of(cluster: Cluster, tier: str, name: str) -> int:
    replica = next(r for r in cluster.cluster_info()[tier]["replicas"] if r["name"] == name)
    return int(replica["pid"])


def test_cluster_view_shows_a_kill_a_failover_and_the_rejoins(
    cluster: Cluster, page: Page, steps: Steps
) -> None:
    page.goto(cluster.url + "/")
    for name in ("catalog-1", "catalog-2", "order-1", "order-2"):
        expect(replica_row(page, name)).to_have_attribute("data-state", "in_sync", timeout=UI_MS)
    expect(tier_view(page, "order").get_by_test_id("tier-primary")).to_have_text("order-1")
    epoch_before = int(tier_view(page, "order").get_by_test_id("tier-epoch").inner_text())
    steps.shot("all-in-sync")

    # A backup killed: down, still a backup; the primary is unchanged.
    os.kill(pid_of(cluster, "catalog", "catalog-2"), signal.SIGKILL)
    expect(replica_row(page, "catalog-2")).to_have_attribute("data-state", "down", timeout=FAULT_MS)
    expect(tier_view(page, "catalog").get_by_test_id("tier-primary")).to_have_text("catalog-1")
    steps.shot("backup-killed-down")

    with served_by_hand(cluster, "catalog-2"):
        expect(replica_row(page, "catalog-2")).to_have_attribute(
            "data-state", "in_sync", timeout=FAULT_MS
        )
        steps.shot("backup-restarted-in-sync")

        # The primary killed: the backup is promoted, in a new epoch.
        os.kill(pid_of(cluster, "order", "order-1"), signal.SIGKILL)
        order = tier_view(page, "order")
        expect(order.get_by_test_id("tier-primary")).to_have_text("order-2", timeout=FAULT_MS)
        expect(replica_row(page, "order-2")).to_have_attribute("data-role", "primary")
        epoch_after = int(order.get_by_test_id("tier-epoch").inner_text())
        assert epoch_after > epoch_before
        expect(replica_row(page, "order-1")).to_have_attribute("data-state", "down", timeout=UI_MS)
        steps.shot("primary-killed-failover")

        with served_by_hand(cluster, "order-1"):
            expect(replica_row(page, "order-1")).to_have_attribute(
                "data-state", "in_sync", timeout=FAULT_MS
            )
            expect(replica_row(page, "order-1")).to_have_attribute("data-role", "backup")
            epoch_now = cluster.cluster_info()["order"]["epoch"]
            assert epoch_now > epoch_after  # rejoining is a view change
            expect(order.get_by_test_id("tier-epoch")).to_have_text(str(epoch_now), timeout=UI_MS)
            steps.shot("old-primary-rejoined-as-backup")

            # The last minute's charts, drawn all along: one line per replica, by name.
            charts = page.get_by_test_id("charts")
            expect(charts.locator(".uplot")).to_have_count(5)
            expect(page.get_by_test_id("chart-throughput-value")).to_have_text(NUMBER)
            for tier, names in (("catalog", "catalog-1 catalog-2"), ("order", "order-1 order-2")):
                legend = charts.locator(f'[data-chart="log-{tier}"] .u-legend')
                expect(legend).to_have_text(re.compile(r"\s*".join(names.split())))
