"""Tools of the browser tests (`tests/browser/`): Playwright's sync API driving Debian's
chromium, headless, and numbered screenshots of each step of a test.

Why Debian's chromium and not Playwright's download: the tests run offline, and `make test`
installs the distribution's package when it is missing. A page that throws an uncaught
JavaScript error fails its test, whatever the test asserted.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path("test-artifacts") / "browser"
VIEWPORT: ViewportSize = {"width": 1400, "height": 1100}
ACTION_TIMEOUT_MS = 10_000
"""Playwright's bound on a click or a fill; `expect(...)` calls pass their own."""


class Steps:
    """Screenshots of one test's steps, `01-<step>.png`, ... in `directory` (emptied first)."""

    def __init__(self, page: Page, directory: Path) -> None:
        self.page = page
        self.directory = directory
        self.saved: list[Path] = []
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)

    def shot(self, step: str) -> Path:
        path = self.directory / f"{len(self.saved) + 1:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.saved.append(path)
        return path


def artifacts_dir(root: Path, test_name: str) -> Path:
    return root / ARTIFACTS / re.sub(r"[^\w.-]+", "_", test_name)


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium, headless; Playwright's driver process ends with the context.

    Raises: FileNotFoundError when chromium is not installed.
    """
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: `make browser` installs it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def fresh_page(browser: Browser) -> Iterator[Page]:
    """A page in a context of its own (no cookies or sessionStorage shared between tests)."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"uncaught JavaScript errors: {errors}"
