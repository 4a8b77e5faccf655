"""The catalog's reads, on a replica's read-only connection: books, topics and the completed
sales the order tier's reconciler pages through."""

from __future__ import annotations

import sqlite3

from bazar.money import cents_to_cost
from bazar.replication.storage import row_dict
from bazar.wire import Book, Row, SaleMark, SaleRecord, Version


def book_from_row(row: sqlite3.Row | Row) -> Book:
    return Book(
        id=int(row["id"]),  # type: ignore[arg-type]
        title=str(row["title"]),
        topic=str(row["topic"]),
        stock=int(row["stock"]),  # type: ignore[arg-type]
        cost=cents_to_cost(int(row["cost_cents"])),  # type: ignore[arg-type]
    )


def row_version(row: sqlite3.Row | Row) -> Version:
    return (int(row["version_epoch"]), int(row["version_seq"]))  # type: ignore[arg-type]


def read_book(conn: sqlite3.Connection, book_id: int) -> Row | None:
    row = conn.execute("SELECT * FROM books WHERE id = ?", (book_id,)).fetchone()
    return row_dict(row) if row is not None else None


def read_books(conn: sqlite3.Connection) -> list[Row]:
    return [row_dict(row) for row in conn.execute("SELECT * FROM books ORDER BY id")]


def matches_topic(row: Row, topic: str) -> bool:
    """Case-insensitive substring match on the topic (Unicode-aware, unlike SQLite LIKE)."""
    return topic.casefold() in str(row["topic"]).casefold()


def read_sales(conn: sqlite3.Connection, after: SaleMark, limit: int) -> list[SaleRecord]:
    """Completed sales after `after`, in commit order: the order tier's reconciler finds
    those without an order here."""
    rows = conn.execute(
        "SELECT s.*, b.title FROM sales s LEFT JOIN books b ON b.id = s.book_id"
        " WHERE s.status = 'ok' AND (s.seq, s.idempotency_key) > (?, ?)"
        " ORDER BY s.seq, s.idempotency_key LIMIT ?",
        (after.seq, after.key, limit),
    )
    return [
        SaleRecord(
            mark=SaleMark(seq=row["seq"], key=row["idempotency_key"]),
            book_id=row["book_id"],
            quantity=row["quantity"],
            unit_cost_cents=row["unit_cost_cents"],
            title=row["title"] or "",
        )
        for row in rows
    ]
