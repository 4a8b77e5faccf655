"""The order service's state machine: purchases by idempotency key, and orders.

A purchase goes through two replicated steps around the catalog sale:
`BeginPurchase` records `pending(key)`; after the catalog answers, `FinishPurchase` records
the outcome: a completed order (sale done), a remembered `out_of_stock` (so the key answers
409 again, even after a restock), or nothing at all for an unknown book (404 stores nothing).
A pending purchase left by a crash is finished by the primary's recovery loop, so at
quiescence every sale has exactly one order and no order exists without its sale.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from bazar.replication.storage import row_dict, write_row
from bazar.wire import (
    BeginPurchase,
    BeginResult,
    Change,
    Delete,
    FinishPurchase,
    FinishResult,
    Order,
    OrderCommand,
    Row,
    Upsert,
    Version,
    cents_to_cost,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS purchases (
    idempotency_key TEXT PRIMARY KEY,
    book_id INTEGER NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'out_of_stock')),
    order_id TEXT,
    created_at TEXT NOT NULL
);
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
CREATE INDEX IF NOT EXISTS purchases_pending ON purchases (status) WHERE status = 'pending';
"""

TABLES: Mapping[str, str] = {"purchases": "idempotency_key", "orders": "id"}
Result = BeginResult | FinishResult


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


def _order_by_id(conn: sqlite3.Connection, order_id: str) -> Order:
    row = conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
    assert row is not None, "a completed purchase has its order"
    return order_from_row(row)


class OrderMachine:
    tables = TABLES

    def execute(
        self, conn: sqlite3.Connection, command: OrderCommand, version: Version
    ) -> tuple[list[Change], Result]:
        if isinstance(command, BeginPurchase):
            return self._begin(conn, command)
        return self._finish(conn, command)

    def _begin(
        self, conn: sqlite3.Connection, command: BeginPurchase
    ) -> tuple[list[Change], Result]:
        earlier = conn.execute(
            "SELECT * FROM purchases WHERE idempotency_key = ?", (command.idempotency_key,)
        ).fetchone()
        if earlier is not None:
            if (earlier["book_id"], earlier["quantity"]) != (command.book_id, command.quantity):
                return [], BeginResult(status="key_reused")
            if earlier["status"] == "completed":
                order = _order_by_id(conn, earlier["order_id"])
                return [], BeginResult(status="completed", order=order)
            return [], BeginResult(status=earlier["status"])
        row: Row = {
            "idempotency_key": command.idempotency_key,
            "book_id": command.book_id,
            "quantity": command.quantity,
            "status": "pending",
            "order_id": None,
            "created_at": command.created_at,
        }
        change = Upsert(table="purchases", row=row)
        write_row(conn, TABLES, change)
        return [change], BeginResult(status="started")

    def _finish(
        self, conn: sqlite3.Connection, command: FinishPurchase
    ) -> tuple[list[Change], Result]:
        found = conn.execute(
            "SELECT * FROM purchases WHERE idempotency_key = ?", (command.idempotency_key,)
        ).fetchone()
        if found is None:
            return [], FinishResult(status="not_found")
        purchase = row_dict(found)
        if purchase["status"] == "completed":
            order = _order_by_id(conn, str(purchase["order_id"]))
            return [], FinishResult(status="completed", order=order)
        if purchase["status"] == "out_of_stock":
            return [], FinishResult(status="out_of_stock")
        if command.outcome in ("not_found", "aborted"):
            change: Change = Delete(table="purchases", key=command.idempotency_key)
            write_row(conn, TABLES, change)
            return [change], FinishResult(
                status="not_found" if command.outcome == "not_found" else "aborted"
            )
        if command.outcome == "out_of_stock":
            purchase["status"] = "out_of_stock"
            change = Upsert(table="purchases", row=purchase)
            write_row(conn, TABLES, change)
            return [change], FinishResult(status="out_of_stock")
        return self._complete(conn, command, purchase)

    def _complete(
        self, conn: sqlite3.Connection, command: FinishPurchase, purchase: Row
    ) -> tuple[list[Change], Result]:
        assert command.order_id
        position = conn.execute("SELECT coalesce(max(position), 0) + 1 FROM orders").fetchone()
        quantity = int(purchase["quantity"])  # type: ignore[arg-type]
        order_row: Row = {
            "id": command.order_id,
            "position": int(position[0]),
            "idempotency_key": command.idempotency_key,
            "book_id": purchase["book_id"],
            "quantity": quantity,
            "unit_cost_cents": command.unit_cost_cents,
            "total_cost_cents": command.unit_cost_cents * quantity,
            "created_at": purchase["created_at"],
        }
        purchase = {**purchase, "status": "completed", "order_id": command.order_id}
        changes: list[Change] = [
            Upsert(table="orders", row=order_row),
            Upsert(table="purchases", row=purchase),
        ]
        for change in changes:
            write_row(conn, TABLES, change)
        return changes, FinishResult(status="completed", order=order_from_row(order_row))


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


def pending_purchases(conn: sqlite3.Connection, limit: int) -> list[BeginPurchase]:
    rows = conn.execute(
        "SELECT * FROM purchases WHERE status = 'pending' LIMIT ?", (limit,)
    ).fetchall()
    return [
        BeginPurchase(
            idempotency_key=row["idempotency_key"],
            book_id=row["book_id"],
            quantity=row["quantity"],
            created_at=row["created_at"],
        )
        for row in rows
    ]
