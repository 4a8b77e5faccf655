"""The order service's state machine: orders, one per idempotency key.

A purchase is two replicated writes in sequence: the catalog's sale, recorded there under the
idempotency key (the durable intent and the authority on the key: its book, quantity and
outcome), then `RecordOrder` here. `RecordOrder` is idempotent by key, so the order primary's
reconciler can record the order of any sale left without one (a crash, an unreachable order
replica, a failover between the two writes) while a client's retry records it too: one order
either way. `Reconciled` remembers how far the reconciler has checked the catalog's sales.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from bazar.money import cents_to_cost
from bazar.replication.storage import row_dict, write_row
from bazar.wire import (
    Change,
    Order,
    OrderCommand,
    OrderResult,
    Reconciled,
    RecordOrder,
    Row,
    SaleMark,
    Upsert,
    Version,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    idempotency_key TEXT NOT NULL UNIQUE,
    book_id INTEGER NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    unit_cost_cents INTEGER NOT NULL,
    total_cost_cents INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reconciled (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    sale_seq INTEGER NOT NULL,
    sale_key TEXT NOT NULL
);
"""

TABLES: Mapping[str, str] = {"orders": "id", "reconciled": "id"}
Result = OrderResult


def order_from_row(row: sqlite3.Row | Row) -> Order:
    return Order(
        id=str(row["id"]),
        book_id=int(row["book_id"]),  # type: ignore[arg-type]
        quantity=int(row["quantity"]),  # type: ignore[arg-type]
        unit_cost=cents_to_cost(int(row["unit_cost_cents"])),  # type: ignore[arg-type]
        total_cost=cents_to_cost(int(row["total_cost_cents"])),  # type: ignore[arg-type]
        status="completed",
        created_at=str(row["created_at"]),
    )


class OrderMachine:
    tables = TABLES

    def execute(
        self, conn: sqlite3.Connection, command: OrderCommand, version: Version
    ) -> tuple[list[Change], Result]:
        if isinstance(command, RecordOrder):
            return self._record(conn, command)
        return self._reconciled(conn, command)

    def _record(
        self, conn: sqlite3.Connection, command: RecordOrder
    ) -> tuple[list[Change], Result]:
        earlier = conn.execute(
            "SELECT * FROM orders WHERE idempotency_key = ?", (command.idempotency_key,)
        ).fetchone()
        if earlier is not None:
            return [], OrderResult(order=order_from_row(earlier), replayed=True)
        position = conn.execute("SELECT coalesce(max(position), 0) + 1 FROM orders").fetchone()
        row: Row = {
            "id": command.order_id,
            "position": int(position[0]),
            "idempotency_key": command.idempotency_key,
            "book_id": command.book_id,
            "quantity": command.quantity,
            "unit_cost_cents": command.unit_cost_cents,
            "total_cost_cents": command.unit_cost_cents * command.quantity,
            "created_at": command.created_at,
        }
        change = Upsert(table="orders", row=row)
        write_row(conn, TABLES, change)
        return [change], OrderResult(order=order_from_row(row), replayed=False)

    def _reconciled(
        self, conn: sqlite3.Connection, command: Reconciled
    ) -> tuple[list[Change], Result]:
        if reconciled_mark(conn) >= command.through:
            return [], OrderResult()  # a late or repeated mark never moves it back
        row: Row = {"id": 1, "sale_seq": command.through.seq, "sale_key": command.through.key}
        change = Upsert(table="reconciled", row=row)
        write_row(conn, TABLES, change)
        return [change], OrderResult()


# ---------------------------------------------------------------- reads (reader connection)


def read_order(conn: sqlite3.Connection, order_id: str, unapplied: list[Row]) -> Order | None:
    """An order from the table, or from committed orders not applied here yet."""
    row = conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
    if row is not None:
        return order_from_row(row)
    for extra in unapplied:
        if extra["id"] == order_id:
            return order_from_row(extra)
    return None


def read_page(
    conn: sqlite3.Connection, limit: int, after: str | None, unapplied: list[Row]
) -> tuple[list[Order], str | None] | None:
    """Orders oldest first (commit order), including committed orders not applied here yet
    (they come after every applied one). None when `after` names no order."""
    extra = {str(row["id"]): row for row in unapplied}
    position = 0
    if after is not None:
        if after in extra:
            position = int(extra[after]["position"])  # type: ignore[arg-type]
        else:
            found = conn.execute("SELECT position FROM orders WHERE id = ?", (after,)).fetchone()
            if found is None:
                return None
            position = int(found[0])
    rows: list[Row] = [
        row_dict(row)
        for row in conn.execute(
            "SELECT * FROM orders WHERE position > ? ORDER BY position LIMIT ?",
            (position, limit + 1),
        )
    ]
    seen = {row["id"] for row in rows}
    rows += [
        row
        for row in unapplied
        if int(row["position"]) > position and row["id"] not in seen  # type: ignore[arg-type]
    ]
    rows.sort(key=lambda row: int(row["position"]))  # type: ignore[arg-type]
    orders = [order_from_row(row) for row in rows[:limit]]
    return orders, (orders[-1].id if len(rows) > limit else None)


def order_by_key(conn: sqlite3.Connection, key: str) -> Order | None:
    row = conn.execute("SELECT * FROM orders WHERE idempotency_key = ?", (key,)).fetchone()
    return order_from_row(row) if row is not None else None


def reconciled_mark(conn: sqlite3.Connection) -> SaleMark:
    """How far the catalog's sales have been checked for orders (every sale up to it has
    its order): the reconciler's next page starts after it."""
    row = conn.execute("SELECT sale_seq, sale_key FROM reconciled WHERE id = 1").fetchone()
    return SaleMark(seq=0, key="") if row is None else SaleMark(seq=row[0], key=row[1])
