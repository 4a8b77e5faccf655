"""The state machines on real SQLite files: the atomic conditional decrement, idempotency
records, and that backups applying the row images reach the primary's exact state."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import msgspec
import pytest

from bazar.catalog import machine as catalog
from bazar.catalog import reads as catalog_reads
from bazar.catalog import seed as catalog_seed
from bazar.order import machine as order
from bazar.replication.storage import Store, begin_batch, commit_batch, stage_entries
from bazar.wire import (
    Book,
    CatalogCommand,
    Order,
    OrderCommand,
    OrderResult,
    Reconciled,
    RecordOrder,
    Row,
    SaleMark,
    SaleResult,
    Sell,
    UpdateBook,
    UpdateResult,
)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    primary = Store(tmp_path / "p" / "db", catalog.SCHEMA, catalog.TABLES)
    backup = Store(tmp_path / "b" / "db", catalog.SCHEMA, catalog.TABLES)
    books = catalog_seed.load_seed(None)
    for store in (primary, backup):
        assert store.write_blocking(partial(catalog_seed.seed, books=books))
    yield primary, backup
    primary.close()
    backup.close()


def run(store: Store, commands: list[CatalogCommand]) -> list[catalog.Result]:
    """One batch at the next seq (a batch that logs nothing does not move the commit point)."""
    version = (1, store.load_meta().commit_seq + 1)
    entry, results = store.write_blocking(
        partial(begin_batch, machine=catalog.CatalogMachine(), commands=commands, version=version)
    )
    if entry is not None:
        store.write_blocking(partial(commit_batch, intent=store.intent, entry=entry))
    return results


def sell(key: str, book: int, quantity: int) -> Sell:
    return Sell(idempotency_key=key, book_id=book, quantity=quantity)


def stock(store: Store, book_id: int) -> object:
    row = catalog_reads.read_book(store.reader, book_id)
    assert row is not None
    return row["stock"]


def update(key: str, book: int, stock_delta: int, cost_cents: int | None = None) -> UpdateBook:
    return UpdateBook(
        book_id=book, stock_delta=stock_delta, cost_cents=cost_cents, idempotency_key=key
    )


def rows(store: Store, table: str) -> int:
    count: int = store.reader.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return count


def book_after(result: catalog.Result) -> Book:
    assert isinstance(result, UpdateResult)
    assert result.book is not None
    return result.book


def test_sell_decrements_only_while_stock_lasts(stores: tuple[Store, Store]) -> None:
    primary, _ = stores
    results = run(primary, [sell(f"k{i}", 4, 1) for i in range(5)])
    assert [r.status for r in results] == ["ok", "ok", "ok", "out_of_stock", "out_of_stock"]
    assert catalog_reads.read_book(primary.reader, 4)["stock"] == 0  # type: ignore[index]


def test_sell_replays_the_first_result_and_refuses_other_parameters(
    stores: tuple[Store, Store],
) -> None:
    primary, _ = stores
    first = run(primary, [sell("k", 3, 4)])[0]
    run(primary, [UpdateBook(book_id=3, stock_delta=10)])
    again = run(primary, [sell("k", 3, 4)])[0]
    other = run(primary, [sell("k", 3, 1)])[0]
    assert isinstance(first, SaleResult)
    assert isinstance(again, SaleResult)
    assert not first.replayed
    assert again.replayed
    assert msgspec.structs.replace(again, replayed=False) == first
    assert other.status == "key_reused"
    assert catalog_reads.read_book(primary.reader, 3)["stock"] == 10  # type: ignore[index]


def test_out_of_stock_is_remembered_under_its_key(stores: tuple[Store, Store]) -> None:
    primary, _ = stores
    assert run(primary, [sell("big", 1, 100)])[0].status == "out_of_stock"
    run(primary, [UpdateBook(book_id=1, stock_delta=1000)])
    assert run(primary, [sell("big", 1, 100)])[0].status == "out_of_stock"


def test_unknown_book_stores_nothing(stores: tuple[Store, Store]) -> None:
    primary, _ = stores
    assert run(primary, [sell("k", 99, 1)])[0].status == "not_found"
    assert primary.reader.execute("SELECT count(*) FROM sales").fetchone()[0] == 0
    assert primary.load_meta().commit_seq == 0


def test_update_cannot_take_stock_below_zero(stores: tuple[Store, Store]) -> None:
    primary, _ = stores
    result = run(primary, [UpdateBook(book_id=2, stock_delta=-6)])[0]
    assert result.status == "out_of_stock"
    book = book_after(run(primary, [UpdateBook(book_id=2, stock_delta=-5, cost_cents=1999)])[0])
    assert (book.stock, book.cost) == (0, 19.99)


def test_update_retry_with_same_key_is_applied_once(stores: tuple[Store, Store]) -> None:
    """A retry of a keyed update (the front end's, after a failover) gets the first result,
    even after the book has changed since, and changes nothing: in a later batch or in the
    same one."""
    primary, _ = stores
    first = run(primary, [update("u", 3, 5, cost_cents=1250)])[0]
    run(primary, [sell("s", 3, 2)])
    again, twice = run(primary, [update("u", 3, 5, 1250), update("u", 3, 5, 1250)])
    assert isinstance(first, UpdateResult)
    assert not first.replayed
    assert book_after(first) == Book(
        id=3, title=book_after(first).title, topic="Undergraduate School", stock=9, cost=12.5
    )
    for replay in (again, twice):
        assert replay == msgspec.structs.replace(first, replayed=True)
    assert stock(primary, 3) == 7
    assert rows(primary, "updates") == 1
    one_batch = run(primary, [update("v", 1, 1), update("v", 1, 1)])
    assert [r.replayed for r in one_batch] == [False, True]
    assert stock(primary, 1) == 7


def test_update_out_of_stock_is_remembered_under_its_key(stores: tuple[Store, Store]) -> None:
    primary, _ = stores
    assert run(primary, [update("down", 2, -6)])[0].status == "out_of_stock"
    run(primary, [update("up", 2, 10)])
    replay = run(primary, [update("down", 2, -6)])[0]
    assert replay == UpdateResult(status="out_of_stock", replayed=True)
    assert stock(primary, 2) == 15


def test_update_key_given_to_another_command_is_key_reused(stores: tuple[Store, Store]) -> None:
    """A key names one command: another book, delta or cost, or a sale's key, is refused,
    and so is a sale under an update's key; none of them changes anything."""
    primary, _ = stores
    run(primary, [update("u", 1, 1), sell("s", 2, 1)])
    refused = [update("u", 2, 1), update("u", 1, 2), update("u", 1, 1, cost_cents=100)]
    refused += [update("s", 2, 1), update("s", 2, 0)]
    results = run(primary, [*refused, sell("u", 1, 1)])
    assert [r.status for r in results] == ["key_reused"] * 6
    assert (stock(primary, 1), stock(primary, 2)) == (7, 4)
    assert primary.load_meta().commit_seq == 1


def test_update_of_unknown_book_or_of_nothing_stores_nothing(
    stores: tuple[Store, Store],
) -> None:
    """A 404 stores nothing (as a sale's); a no-op update (`stock_delta: 0`) is a read."""
    primary, _ = stores
    assert run(primary, [update("gone", 99, 1)])[0].status == "not_found"
    noop = run(primary, [update("noop", 4, 0)])[0]
    assert book_after(noop).stock == 3
    assert rows(primary, "updates") == 0
    assert primary.load_meta().commit_seq == 0


def test_check_constraint_refuses_negative_stock(stores: tuple[Store, Store]) -> None:
    primary, _ = stores

    def corrupt(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE books SET stock = -1 WHERE id = 1")

    with pytest.raises(sqlite3.IntegrityError):
        primary.write_blocking(corrupt)


def test_backup_applying_row_images_reaches_the_primary_state(stores: tuple[Store, Store]) -> None:
    primary, backup = stores
    for seq in range(1, 6):
        restock = update(f"u{seq}", 7, seq)
        run(primary, [sell(f"k{seq}", seq, 1), restock, UpdateBook(book_id=6, cost_cents=seq)])
    entries = primary.read_log(1, None)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    backup.write_blocking(
        partial(
            stage_entries,
            tables=catalog.TABLES,
            epoch=1,
            truncate_from=None,
            entries=entries,
            apply=entries,
            commit_seq=5,
        )
    )
    dump = "SELECT * FROM books ORDER BY id"
    sales = "SELECT * FROM sales ORDER BY idempotency_key"
    updates = "SELECT * FROM updates ORDER BY idempotency_key"
    for query in (dump, sales, updates):
        assert [tuple(r) for r in primary.reader.execute(query)] == [
            tuple(r) for r in backup.reader.execute(query)
        ]
    assert backup.load_meta().commit_seq == 5


def test_open_batch_is_invisible_to_readers_until_commit(stores: tuple[Store, Store]) -> None:
    primary, _ = stores
    entry, _ = primary.write_blocking(
        partial(
            begin_batch,
            machine=catalog.CatalogMachine(),
            commands=[sell("k", 1, 1)],
            version=(1, 1),
        )
    )
    assert entry is not None
    assert catalog_reads.read_book(primary.reader, 1)["stock"] == 6  # type: ignore[index]
    primary.write_blocking(partial(commit_batch, intent=primary.intent, entry=entry))
    assert catalog_reads.read_book(primary.reader, 1)["stock"] == 5  # type: ignore[index]


def test_completed_sales_page_in_commit_order(stores: tuple[Store, Store]) -> None:
    primary, _ = stores
    run(primary, [sell("b", 1, 1), sell("a", 1, 2), sell("gone", 99, 1)])
    run(primary, [sell("c", 4, 5)])  # out of stock: no order is owed
    run(primary, [sell("d", 2, 1)])
    everything = catalog_reads.read_sales(primary.reader, SaleMark(seq=0, key=""), 10)
    assert [sale.mark for sale in everything] == [
        SaleMark(1, "a"),
        SaleMark(1, "b"),
        SaleMark(3, "d"),
    ]
    assert (everything[0].book_id, everything[0].quantity) == (1, 2)
    book = catalog_reads.read_book(primary.reader, 1)
    assert book is not None
    assert everything[0].title == book["title"]  # for the order service's log line
    after_a = catalog_reads.read_sales(primary.reader, SaleMark(seq=1, key="a"), 1)
    assert [sale.mark for sale in after_a] == [SaleMark(1, "b")]
    assert catalog_reads.read_sales(primary.reader, SaleMark(seq=3, key="d"), 10) == []


def test_order_recorded_once_per_key(tmp_path: Path) -> None:
    store = Store(tmp_path / "o" / "db", order.SCHEMA, order.TABLES)
    machine = order.OrderMachine()

    def step(commands: list[OrderCommand], seq: int) -> list[order.Result]:
        entry, results = store.write_blocking(
            partial(begin_batch, machine=machine, commands=commands, version=(1, seq))
        )
        if entry is not None:
            store.write_blocking(partial(commit_batch, intent=store.intent, entry=entry))
        return results

    def record(order_id: str) -> RecordOrder:
        return RecordOrder(
            idempotency_key="k",
            book_id=1,
            quantity=2,
            unit_cost_cents=1050,
            order_id=order_id,
            created_at="t",
        )

    # The client's retry and the reconciler, in one batch: one order, the first one.
    first, second = step([record("o1"), record("o9")], 1)
    done = first.order
    assert isinstance(done, Order)
    assert not first.replayed
    assert second == OrderResult(order=done, replayed=True)
    assert done.total_cost == 21.0
    assert step([record("o3")], 2)[0].replayed  # (logs nothing: seq 2 is still the next)
    assert order.order_by_key(store.reader, "k") == done
    assert order.order_by_key(store.reader, "other") is None
    # The reconciler's mark only moves forward.
    assert order.reconciled_mark(store.reader) == SaleMark(0, "")
    step([Reconciled(through=SaleMark(5, "x"))], 2)
    step([Reconciled(through=SaleMark(5, "a"))], 3)
    assert order.reconciled_mark(store.reader) == SaleMark(5, "x")
    assert order.read_page(store.reader, 10, None, []) == ([done], None)
    assert order.read_page(store.reader, 10, "nope", []) is None
    later: Row = {
        "id": "o2",
        "position": 2,
        "idempotency_key": "k2",
        "book_id": 1,
        "quantity": 1,
        "unit_cost_cents": 100,
        "total_cost_cents": 100,
        "created_at": "t",
    }  # committed at the primary, staged here: a backup still lists it, after the others
    page = order.read_page(store.reader, 1, None, [later])
    assert page == ([done], "o1")
    page = order.read_page(store.reader, 1, "o1", [later])
    assert page is not None
    assert [o.id for o in page[0]] == ["o2"]
    assert page[1] is None
    assert order.read_order(store.reader, "o2", [later]) == order.order_from_row(later)
    store.close()
