"""`/docs` in a real browser: Swagger UI renders every operation of `/openapi.json` from the
vendored files alone, and "Try it out" calls the live front end.

Goal: prove the docs work offline and are usable, which reading the HTML cannot (the bundle
could fail to run, fetch a font or a validator badge from another host, or point its requests
elsewhere). Method: headless Debian chromium through Playwright; every request the page makes
is recorded, and any to another origin is aborted and fails the test. The page is then used as
a reader would: open GET /info/{id}, type an id, Execute, and read the answer it shows. A
screenshot of the page after that is kept in the test's `tmp_path`. The browser is the
one of tests/conftest.py (per module: Playwright's sync API runs one driver at a time).
"""

from __future__ import annotations

import json
from pathlib import Path

from playwright.sync_api import Browser, Page, Route

from bazar.testing.cluster import Cluster

RENDER_DEADLINE_MS = 20_000


def operation_count(cluster: Cluster) -> int:
    status, document = cluster.json("GET", "/openapi.json")
    assert status == 200
    methods = {"get", "put", "post", "patch", "delete"}
    return sum(len(methods & set(item)) for item in document["paths"].values())


def test_docs_render_offline_and_try_it_out_reaches_the_front_end(
    cluster: Cluster, browser: Browser, tmp_path: Path
) -> None:
    foreign: list[str] = []
    requested: list[str] = []

    def only_this_front_end(route: Route) -> None:
        url = route.request.url
        requested.append(url)
        if url.startswith(cluster.url + "/"):
            route.continue_()
        else:
            foreign.append(url)
            route.abort()

    page: Page = browser.new_page()
    try:
        page.route("**/*", only_this_front_end)
        page.goto(cluster.url + "/docs")
        blocks = page.locator(".opblock")
        blocks.nth(operation_count(cluster) - 1).wait_for(timeout=RENDER_DEADLINE_MS)
        assert blocks.count() == operation_count(cluster)
        assert page.locator(".info .title").inner_text().startswith("Bazar")

        info = page.locator("#operations-store-getBook")
        info.locator(".opblock-summary").click()
        info.locator('input[placeholder="id"]').fill("2")
        info.locator("button.execute").click()
        status = info.locator(".live-responses-table .response .response-col_status")
        status.first.wait_for(timeout=RENDER_DEADLINE_MS)
        assert status.first.inner_text().strip() == "200"
        shown = info.locator(".live-responses-table .response-col_description pre").first
        assert json.loads(shown.inner_text())["data"]["title"] == "RPCs for Noobs"
        page.screenshot(path=str(tmp_path / "docs-try-it-out.png"), full_page=True)
    finally:
        page.close()
    assert foreign == []
    assert cluster.url + "/openapi.json" in requested
    assert cluster.url + "/info/2" in requested
