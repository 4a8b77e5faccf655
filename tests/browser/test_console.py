"""The teaching console (`bazar up --demo`) in a real browser.

Goal: a teacher with the admin token can kill, pause, resume and restart a replica, switch a
primary over, add and remove a replica from the page, and the cluster view shows each
effect; without the token the console does nothing. Method: one `--demo` cluster with the
supervisor's automatic restarts on (as `bazar up --demo` runs by default), so that a replica
killed from the console staying down proves the console holds it; each test leaves every
replica in sync for the next.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Locator, Page, expect

from bazar.testing.browser import Steps
from bazar.testing.cluster import Cluster

UI_MS = 5_000
FAULT_MS = 15_000
"""A lease expiry, a page refresh, a restart and catch-up, on a shared and busy machine."""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("demo"), demo=True, restart=True) as running:
        yield running


def unlocked(page: Page, cluster: Cluster) -> None:
    page.goto(cluster.url + "/")
    expect(page.get_by_test_id("console-unlock-form")).to_be_visible(timeout=UI_MS)
    page.get_by_test_id("console-token-input").fill(cluster.admin_token)
    page.get_by_test_id("console-unlock").click()
    expect(page.get_by_test_id("console-controls")).to_be_visible(timeout=UI_MS)


def state(page: Page, name: str) -> Locator:
    """The replica's row in the cluster view (`data-state`, `data-role`)."""
    return page.locator(f'[data-testid="replica-row"][data-name="{name}"]')


def console_row(page: Page, name: str) -> Locator:
    return page.locator(f'[data-testid="console-row"][data-name="{name}"]')


def press(page: Page, name: str, action: str) -> None:
    console_row(page, name).get_by_test_id(f"console-{action}").click()


def last_message(page: Page) -> Locator:
    return page.get_by_test_id("console-message").first


def all_in_sync(page: Page, names: tuple[str, ...]) -> None:
    for name in names:
        expect(state(page, name)).to_have_attribute("data-state", "in_sync", timeout=FAULT_MS)


def test_console_refuses_a_wrong_token_and_keeps_the_right_one(
    demo: Cluster, page: Page, steps: Steps
) -> None:
    page.goto(demo.url + "/")
    expect(page.get_by_test_id("console")).to_be_visible(timeout=UI_MS)
    page.get_by_test_id("console-token-input").fill("not-the-token")
    page.get_by_test_id("console-unlock").click()
    expect(page.get_by_test_id("console-token-error")).to_have_text(
        "That is not the admin token.", timeout=UI_MS
    )
    expect(page.get_by_test_id("console-controls")).to_be_hidden()
    steps.shot("wrong-token")

    page.get_by_test_id("console-token-input").fill(demo.admin_token)
    page.get_by_test_id("console-unlock").click()
    expect(page.get_by_test_id("console-controls")).to_be_visible(timeout=UI_MS)
    page.reload()  # kept for the tab's session
    expect(page.get_by_test_id("console-controls")).to_be_visible(timeout=UI_MS)
    expect(page.get_by_test_id("console-unlock-form")).to_be_hidden()
    steps.shot("unlocked")


def test_console_kills_a_replica_that_stays_down_until_restarted(
    demo: Cluster, page: Page, steps: Steps
) -> None:
    unlocked(page, demo)
    all_in_sync(page, ("catalog-1", "catalog-2"))
    press(page, "catalog-2", "kill")
    expect(console_row(page, "catalog-2")).to_have_attribute(
        "data-process", "stopped", timeout=UI_MS
    )
    expect(state(page, "catalog-2")).to_have_attribute("data-state", "down", timeout=FAULT_MS)
    # By now the supervisor would have restarted a crashed replica (0.2 s backoff).
    expect(console_row(page, "catalog-2")).to_have_attribute("data-process", "stopped")
    expect(last_message(page)).to_contain_text("kill catalog-2 · stopped")
    steps.shot("killed-down")

    press(page, "catalog-2", "restart")
    expect(console_row(page, "catalog-2")).to_have_attribute(
        "data-process", "running", timeout=UI_MS
    )
    expect(state(page, "catalog-2")).to_have_attribute("data-state", "in_sync", timeout=FAULT_MS)
    steps.shot("restarted-in-sync")


def test_console_pauses_and_resumes_a_replica(demo: Cluster, page: Page, steps: Steps) -> None:
    unlocked(page, demo)
    all_in_sync(page, ("order-1", "order-2"))
    press(page, "order-2", "pause")
    expect(console_row(page, "order-2")).to_have_attribute("data-process", "paused", timeout=UI_MS)
    expect(state(page, "order-2")).to_have_attribute("data-state", "down", timeout=FAULT_MS)
    steps.shot("paused-down")

    press(page, "order-2", "resume")
    expect(console_row(page, "order-2")).to_have_attribute("data-process", "running", timeout=UI_MS)
    expect(state(page, "order-2")).to_have_attribute("data-state", "in_sync", timeout=FAULT_MS)
    steps.shot("resumed-in-sync")


def test_console_switches_the_primary_over(demo: Cluster, page: Page, steps: Steps) -> None:
    unlocked(page, demo)
    all_in_sync(page, ("catalog-1", "catalog-2"))
    catalog = page.locator('[data-testid="tier-catalog"]')
    before = catalog.get_by_test_id("tier-primary").inner_text()
    after = "catalog-2" if before == "catalog-1" else "catalog-1"
    tier = page.locator('[data-testid="console-tier"][data-tier="catalog"]')
    tier.get_by_test_id("console-switchover-target").select_option(after)
    tier.get_by_test_id("console-switchover").click()
    expect(catalog.get_by_test_id("tier-primary")).to_have_text(after, timeout=FAULT_MS)
    expect(last_message(page)).to_contain_text(f"switch over catalog · primary {after}")
    all_in_sync(page, ("catalog-1", "catalog-2"))
    steps.shot("switched-over")


def test_console_adds_and_removes_a_replica(demo: Cluster, page: Page, steps: Steps) -> None:
    unlocked(page, demo)
    tier = page.locator('[data-testid="console-tier"][data-tier="order"]')
    tier.get_by_test_id("console-add").click()
    expect(last_message(page)).to_contain_text("add a replica to order · order-3", timeout=UI_MS)
    expect(state(page, "order-3")).to_have_attribute("data-state", "in_sync", timeout=FAULT_MS)
    expect(console_row(page, "order-3")).to_have_attribute("data-process", "running")
    steps.shot("added-in-sync")

    press(page, "order-3", "remove")
    expect(state(page, "order-3")).to_have_count(0, timeout=FAULT_MS)
    expect(console_row(page, "order-3")).to_have_count(0, timeout=UI_MS)
    steps.shot("removed")
