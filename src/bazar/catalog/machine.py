"""The catalog's state machine: books, sales and admin updates, executed in the primary's
write transaction.

A sale is the atomic conditional decrement `UPDATE books SET stock = stock - q WHERE id = ?
AND stock >= q`, never read-then-write, and its result is recorded under the idempotency key
in the same transaction, so a retried key (even after a failover) returns the first result.
An admin update under a key is recorded the same way (`updates`), so the front end can retry
it across a view change. A key names one command: a sale's key given to an update, or an
update's to a sale, is `key_reused`. Every write produces row images (`Upsert`) that backups
apply verbatim.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from bazar.catalog.reads import book_from_row
from bazar.money import cents_to_cost
from bazar.replication.storage import row_dict, write_row
from bazar.wire import (
    Book,
    CatalogCommand,
    Change,
    Row,
    SaleResult,
    Sell,
    UpdateBook,
    UpdateResult,
    Upsert,
    Version,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS books (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    topic TEXT NOT NULL,
    stock INTEGER NOT NULL CHECK (stock >= 0),
    cost_cents INTEGER NOT NULL CHECK (cost_cents >= 0),
    version_epoch INTEGER NOT NULL DEFAULT 0,
    version_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sales (
    idempotency_key TEXT PRIMARY KEY,
    book_id INTEGER NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    status TEXT NOT NULL CHECK (status IN ('ok', 'out_of_stock')),
    unit_cost_cents INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sales_done ON sales (seq, idempotency_key) WHERE status = 'ok';
CREATE TABLE IF NOT EXISTS updates (
    idempotency_key TEXT PRIMARY KEY,
    book_id INTEGER NOT NULL,
    stock_delta INTEGER NOT NULL,
    cost_cents INTEGER,
    status TEXT NOT NULL CHECK (status IN ('ok', 'out_of_stock')),
    stock_after INTEGER,
    cost_cents_after INTEGER
);
"""

TABLES: Mapping[str, str] = {
    "books": "id",
    "sales": "idempotency_key",
    "updates": "idempotency_key",
}
Result = SaleResult | UpdateResult


class CatalogMachine:
    tables = TABLES

    def execute(
        self, conn: sqlite3.Connection, command: CatalogCommand, version: Version
    ) -> tuple[list[Change], Result]:
        if isinstance(command, Sell):
            return self._sell(conn, command, version)
        return self._update(conn, command, version)

    def _sell(
        self, conn: sqlite3.Connection, command: Sell, version: Version
    ) -> tuple[list[Change], Result]:
        earlier = conn.execute(
            "SELECT s.*, b.title FROM sales s LEFT JOIN books b ON b.id = s.book_id"
            " WHERE s.idempotency_key = ?",
            (command.idempotency_key,),
        ).fetchone()
        if earlier is not None:
            if (earlier["book_id"], earlier["quantity"]) != (command.book_id, command.quantity):
                return [], SaleResult(status="key_reused")
            return [], SaleResult(
                status=earlier["status"],
                unit_cost_cents=earlier["unit_cost_cents"],
                title=earlier["title"] or "",
                replayed=True,
            )
        if _recorded(conn, "updates", command.idempotency_key):
            return [], SaleResult(status="key_reused")
        book = conn.execute(
            "UPDATE books SET stock = stock - ?1, version_epoch = ?2, version_seq = ?3"
            " WHERE id = ?4 AND stock >= ?1 RETURNING *",
            (command.quantity, version[0], version[1], command.book_id),
        ).fetchone()
        changes: list[Change] = []
        if book is not None:
            changes.append(Upsert(table="books", row=row_dict(book)))
            status = "ok"
        else:
            book = conn.execute("SELECT * FROM books WHERE id = ?", (command.book_id,)).fetchone()
            if book is None:
                return [], SaleResult(status="not_found")
            status = "out_of_stock"
        sale: Row = {
            "idempotency_key": command.idempotency_key,
            "book_id": command.book_id,
            "quantity": command.quantity,
            "status": status,
            "unit_cost_cents": book["cost_cents"],
            "seq": version[1],
        }
        changes.append(Upsert(table="sales", row=sale))
        write_row(conn, TABLES, changes[-1])
        result = SaleResult(
            status="ok" if status == "ok" else "out_of_stock",
            unit_cost_cents=book["cost_cents"],
            title=book["title"],
        )
        return changes, result

    def _update(
        self, conn: sqlite3.Connection, command: UpdateBook, version: Version
    ) -> tuple[list[Change], Result]:
        if command.idempotency_key is not None:
            earlier = _update_replayed(conn, command, command.idempotency_key)
            if earlier is not None:
                return [], earlier
        if command.stock_delta == 0 and command.cost_cents is None:
            # Changes nothing: a read, recorded under no key (a retry reads again).
            current = conn.execute(
                "SELECT * FROM books WHERE id = ?", (command.book_id,)
            ).fetchone()
            if current is None:
                return [], UpdateResult(status="not_found")
            return [], UpdateResult(status="ok", book=book_from_row(current))
        book = conn.execute(
            "UPDATE books SET stock = stock + ?1, cost_cents = coalesce(?2, cost_cents),"
            " version_epoch = ?3, version_seq = ?4 WHERE id = ?5 AND stock + ?1 >= 0"
            " RETURNING *",
            (command.stock_delta, command.cost_cents, version[0], version[1], command.book_id),
        ).fetchone()
        changes: list[Change] = []
        if book is not None:
            changes.append(Upsert(table="books", row=row_dict(book)))
            result = UpdateResult(status="ok", book=book_from_row(book))
        elif conn.execute("SELECT 1 FROM books WHERE id = ?", (command.book_id,)).fetchone():
            result = UpdateResult(status="out_of_stock")
        else:
            return [], UpdateResult(status="not_found")  # stores nothing, like a sale's 404
        if command.idempotency_key is not None:
            record = _update_record(command, command.idempotency_key, book)
            changes.append(Upsert(table="updates", row=record))
            write_row(conn, TABLES, changes[-1])
        return changes, result


def _recorded(conn: sqlite3.Connection, table: str, key: str) -> bool:
    """Whether `table` (sales or updates) holds a result under `key`."""
    assert TABLES[table] == "idempotency_key"
    found = conn.execute(f"SELECT 1 FROM {table} WHERE idempotency_key = ?", (key,))
    return found.fetchone() is not None


def _update_replayed(
    conn: sqlite3.Connection, command: UpdateBook, key: str
) -> UpdateResult | None:
    """The stored result of the update recorded under `key` (`key_reused` if it was another
    command), or None when the key is new."""
    earlier = conn.execute(
        "SELECT u.*, b.title, b.topic FROM updates u LEFT JOIN books b ON b.id = u.book_id"
        " WHERE u.idempotency_key = ?",
        (key,),
    ).fetchone()
    if earlier is None:
        return UpdateResult(status="key_reused") if _recorded(conn, "sales", key) else None
    recorded = (earlier["book_id"], earlier["stock_delta"], earlier["cost_cents"])
    if recorded != (command.book_id, command.stock_delta, command.cost_cents):
        return UpdateResult(status="key_reused")
    if earlier["status"] != "ok":
        return UpdateResult(status="out_of_stock", replayed=True)
    book = Book(
        id=earlier["book_id"],
        title=earlier["title"] or "",
        topic=earlier["topic"] or "",
        stock=earlier["stock_after"],
        cost=cents_to_cost(earlier["cost_cents_after"]),
    )
    return UpdateResult(status="ok", book=book, replayed=True)


def _update_record(command: UpdateBook, key: str, book: sqlite3.Row | None) -> Row:
    """The row that records an executed update's result under its key: the book it left
    (`book`), or None for out of stock."""
    assert book is None or book["id"] == command.book_id
    assert book is None or book["stock"] >= 0
    return {
        "idempotency_key": key,
        "book_id": command.book_id,
        "stock_delta": command.stock_delta,
        "cost_cents": command.cost_cents,
        "status": "out_of_stock" if book is None else "ok",
        "stock_after": None if book is None else book["stock"],
        "cost_cents_after": None if book is None else book["cost_cents"],
    }
