"""The storefront at `/` in a real browser, against a real 2+2 cluster: browse, book info,
search by topic, buy until a book is out of stock and see the error, find the orders in the
purchases list (and behind it, in the order service)."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect

from bazar.testing.browser import Steps
from bazar.testing.cluster import Cluster

UI_MS = 5_000
POSITIVE = re.compile(r"^(?!0\.0$)\d+\.\d$")


def book_row(page: Page, book_id: int) -> Locator:
    return page.locator(f'[data-testid="book-row"][data-book-id="{book_id}"]')


def buy(page: Page, book_id: int, quantity: int) -> None:
    row = book_row(page, book_id)
    row.get_by_test_id("quantity-input").fill(str(quantity))
    row.get_by_test_id("buy-button").click()


def test_browse_all_books_and_open_one(cluster: Cluster, page: Page, steps: Steps) -> None:
    page.goto(cluster.url + "/")
    expect(page.get_by_test_id("book-row")).to_have_count(7, timeout=UI_MS)
    expect(page.get_by_test_id("books-status")).to_have_text("All books: 7 books")
    expect(book_row(page, 2).get_by_test_id("book-cost")).to_have_text("$15.00")
    steps.shot("all-books")

    book_row(page, 2).get_by_test_id("book-title").click()
    expect(page.get_by_test_id("book-info")).to_be_visible(timeout=UI_MS)
    expect(page.get_by_test_id("info-title")).to_have_text("RPCs for Noobs")
    expect(page.get_by_test_id("info-topic")).to_have_text("Distributed Systems")
    steps.shot("book-info")


def test_search_by_topic(cluster: Cluster, page: Page, steps: Steps) -> None:
    page.goto(cluster.url + "/")
    expect(page.get_by_test_id("book-row")).to_have_count(7, timeout=UI_MS)

    page.get_by_test_id("search-input").fill("distributed")
    page.get_by_test_id("search-button").click()
    rows = page.get_by_test_id("book-row")
    expect(rows).to_have_count(3, timeout=UI_MS)
    expect(rows.get_by_test_id("book-topic")).to_have_text(["Distributed Systems"] * 3)
    assert [rows.nth(i).get_attribute("data-book-id") for i in range(3)] == ["1", "2", "5"]
    steps.shot("search-distributed")

    page.get_by_test_id("search-input").fill("SCHOOL")
    page.get_by_test_id("search-input").press("Enter")
    expect(rows).to_have_count(4, timeout=UI_MS)
    expect(page.get_by_test_id("books-empty")).to_be_hidden()
    steps.shot("search-school-any-case")

    page.get_by_test_id("search-input").fill("cryptography")
    page.get_by_test_id("search-button").click()
    expect(page.get_by_test_id("books-empty")).to_be_visible(timeout=UI_MS)
    expect(rows).to_have_count(0)
    steps.shot("search-no-match")


def test_buy_until_out_of_stock_then_find_the_orders(
    cluster: Cluster, page: Page, steps: Steps
) -> None:
    """Book 4 starts with 3 copies: 2, then 1, then one more is refused with 409."""
    page.goto(cluster.url + "/")
    expect(book_row(page, 4).get_by_test_id("book-stock")).to_have_attribute(
        "data-stock", "3", timeout=UI_MS
    )
    ordered = []
    for quantity, stock_after in ((2, "1"), (1, "0")):
        buy(page, 4, quantity)
        success = page.get_by_test_id("purchase-success")
        expect(success).to_be_visible(timeout=UI_MS)
        expect(success.get_by_test_id("order-quantity")).to_have_text(str(quantity))
        expect(success.get_by_test_id("order-status")).to_have_text("completed")
        ordered.append(success.get_by_test_id("order-id").inner_text())
        expect(book_row(page, 4).get_by_test_id("book-stock")).to_have_attribute(
            "data-stock", stock_after, timeout=UI_MS
        )
        steps.shot(f"bought-{quantity}")
    expect(book_row(page, 4).get_by_test_id("book-stock")).to_have_text("sold out")

    buy(page, 4, 1)
    error = page.get_by_test_id("purchase-error")
    expect(error).to_be_visible(timeout=UI_MS)
    expect(error.get_by_test_id("purchase-error-message")).to_have_text(
        re.compile(r"^409 out_of_stock: ")
    )
    expect(error.get_by_test_id("retry-button")).to_have_count(0)  # a definite refusal
    steps.shot("out-of-stock")

    listed = page.get_by_test_id("order-row")
    expect(listed).to_have_count(2)
    assert [listed.nth(i).get_attribute("data-order-id") for i in range(2)] == ordered[::-1]
    for order_id, quantity in zip(ordered, (2, 1), strict=True):
        status, body = cluster.json("GET", f"/orders/{order_id}")
        assert status == 200, body
        assert (body["data"]["book_id"], body["data"]["quantity"]) == (4, quantity)
    # The last minute's throughput chart counted this traffic (not just the page's polling).
    expect(page.get_by_test_id("chart-throughput-peak")).to_have_text(POSITIVE, timeout=UI_MS)
    steps.shot("purchases-list")


def test_no_teaching_console_without_demo(cluster: Cluster, page: Page, steps: Steps) -> None:
    with page.expect_response(lambda r: r.url.endswith("/admin/processes")) as probed:
        page.goto(cluster.url + "/")
    assert probed.value.status == 404
    expect(page.get_by_test_id("cluster-live")).to_have_class(re.compile(r"\bok\b"), timeout=UI_MS)
    expect(page.get_by_test_id("console")).to_be_hidden()
    steps.shot("no-console")
