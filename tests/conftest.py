"""Shared fixtures: real clusters on loopback, stopped by process group at teardown; a headless
chromium and step screenshots for the browser tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from bazar.testing.browser import ARTIFACTS, Steps, artifacts_dir, chromium, fresh_page
from bazar.testing.cluster import Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One 2+2 cluster shared by a test module (tests must not depend on each other's stock)."""
    running = Cluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own for one test."""
    running = Cluster(tmp_path / "cluster").start()
    try:
        yield running
    finally:
        running.stop()


# ---------------------------------------------------------------- browser tests (tests/browser)

SCREENSHOTS = pytest.StashKey[list[Path]]()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless chromium per test module. Not per session: Playwright's sync API keeps
    an event loop running in the main thread until it stops, and every later test that
    calls `asyncio.run` would fail."""
    try:
        with chromium() as launched:
            yield launched
    except FileNotFoundError as error:
        pytest.fail(str(error))


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with fresh_page(browser) as opened:
        yield opened


@pytest.fixture
def steps(page: Page, request: pytest.FixtureRequest) -> Iterator[Steps]:
    """Screenshots of the test's steps under test-artifacts/browser/<test>/."""
    taken = Steps(page, artifacts_dir(request.config.rootpath, request.node.name))
    yield taken
    request.config.stash.setdefault(SCREENSHOTS, []).extend(taken.saved)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    saved = config.stash.get(SCREENSHOTS, [])
    if saved:
        where = config.rootpath / ARTIFACTS
        terminalreporter.write_line(f"browser screenshots ({len(saved)} steps): {where}/")
