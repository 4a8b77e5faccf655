"""The two small state machines the simulated tiers replicate: a bookstore catalog and an
order book, each as row images (`wire.Upsert`) like the real services, so that
`Replica.dirty`, staged entries and snapshots behave as they do there.

Why not the real machines (`catalog/machine.py`, `order/machine.py`): those execute SQL on a
connection, and the simulator's store must be able to lose exactly the commits an OS crash
loses, which an in-memory dictionary with an undo list does and SQLite cannot be made to.
The rules they keep are the real ones: every command is recorded under its idempotency key
with its first result, so a retried key returns it and never applies twice.

Catalog: `books` {id, stock, epoch, seq}; `purchases` (the sales, with the seq that
committed them, for the order tier's reconciler) and `restocks`, keyed by idempotency key.
Checked after every apply: stock >= 0 and `stock == initial - sold + restocked`.

Order: `orders` keyed by idempotency key, one per sale; `reconciled` {id: 1, seq, key}, how
far the reconciler has checked the catalog's sales.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from bazar.wire import Change, Row, Scalar, Upsert, Version

Tables = dict[str, dict[int | str, Row]]
Lookup = Callable[[str, int | str], Row | None]
"""A row as the open batch sees it (its own writes first)."""


class StoreError(Exception):
    """A write the real store would refuse, or a broken invariant of the data."""


@dataclass(frozen=True, slots=True)
class Buy:
    key: str
    book_id: int
    quantity: int


@dataclass(frozen=True, slots=True)
class Restock:
    key: str
    book_id: int
    delta: int


@dataclass(frozen=True, slots=True)
class RecordOrder:
    """The order of a sale the catalog made under `key`."""

    key: str
    book_id: int
    quantity: int


@dataclass(frozen=True, slots=True)
class Reconciled:
    """Every sale up to `(seq, key)` has its order."""

    seq: int
    key: str


Command = Buy | Restock | RecordOrder | Reconciled


@dataclass(frozen=True, slots=True)
class Outcome:
    """A command's result: a restock also returns the stock it left."""

    status: Literal["ok", "out_of_stock", "key_reused"]
    stock: int | None = None


class SimMachine(Protocol):
    @property
    def tables(self) -> Mapping[str, str]:
        """Replicated table name -> its key column."""
        ...

    @property
    def once(self) -> frozenset[str]:
        """Tables whose keys are written once (idempotency records)."""
        ...

    def initial_rows(self) -> Tables: ...

    def execute(
        self, lookup: Lookup, command: Command, version: Version
    ) -> tuple[list[Change], Outcome]:
        """Run one command inside the open batch: its row images and its result."""
        ...

    def check(self, rows: Tables, changes: Sequence[Change]) -> None:
        """After `changes` were applied. Raises: StoreError when the rows break an
        invariant."""
        ...


def as_int(value: Scalar) -> int:
    assert isinstance(value, int)
    return value


def book_row(book_id: int, stock: int, version: Version) -> Row:
    return {"id": book_id, "stock": stock, "epoch": version[0], "seq": version[1]}


class CatalogSim:
    """The catalog: books, and sales and restocks recorded under their keys."""

    tables: Mapping[str, str] = {"books": "id", "purchases": "key", "restocks": "key"}
    once = frozenset({"purchases", "restocks"})

    def __init__(self, initial: Mapping[int, int]) -> None:
        assert all(stock >= 0 for stock in initial.values())
        self.initial = dict(initial)

    def initial_rows(self) -> Tables:
        books: dict[int | str, Row] = {
            book_id: book_row(book_id, stock, (0, 0))
            for book_id, stock in sorted(self.initial.items())
        }
        return {"books": books, "purchases": {}, "restocks": {}}

    def execute(
        self, lookup: Lookup, command: Command, version: Version
    ) -> tuple[list[Change], Outcome]:
        assert isinstance(command, Buy | Restock), command
        table = "purchases" if isinstance(command, Buy) else "restocks"
        earlier = lookup(table, command.key)
        if earlier is not None:
            stored = earlier["stock"]
            status: Literal["ok", "out_of_stock"] = (
                "ok" if earlier["status"] == "ok" else ("out_of_stock")
            )
            assert earlier["status"] == status
            return [], Outcome(status=status, stock=stored if isinstance(stored, int) else None)
        book = lookup("books", command.book_id)
        assert book is not None, f"no book {command.book_id}"
        stock = as_int(book["stock"])
        delta = -command.quantity if isinstance(command, Buy) else command.delta
        after = stock + delta if stock + delta >= 0 else None
        status = "out_of_stock" if after is None else "ok"
        changes: list[Change] = []
        if after is not None:
            changes.append(Upsert(table="books", row=book_row(command.book_id, after, version)))
        record: Row = {"key": command.key, "book_id": command.book_id, "status": status}
        if isinstance(command, Buy):
            record.update(quantity=command.quantity, stock=None, seq=version[1])
            outcome = Outcome(status=status)
        else:
            record.update(delta=command.delta, stock=after)
            outcome = Outcome(status=status, stock=after)
        changes.append(Upsert(table=table, row=record))
        return changes, outcome

    def check(self, rows: Tables, changes: Sequence[Change]) -> None:
        touched = {
            as_int(change.row["id" if change.table == "books" else "book_id"])
            for change in changes
            if isinstance(change, Upsert)
        }
        for book_id in sorted(touched):
            self.check_book(rows, book_id)

    def check_book(self, rows: Tables, book_id: int) -> None:
        """Raises: StoreError."""
        stock = as_int(rows["books"][book_id]["stock"])
        if stock < 0:
            raise StoreError(f"book {book_id} stock {stock} < 0")
        sold = sum(
            as_int(row["quantity"])
            for row in rows["purchases"].values()
            if row["book_id"] == book_id and row["status"] == "ok"
        )
        restocked = sum(
            as_int(row["delta"])
            for row in rows["restocks"].values()
            if row["book_id"] == book_id and row["status"] == "ok"
        )
        initial = self.initial[book_id]
        if stock != initial - sold + restocked:
            raise StoreError(
                f"book {book_id}: stock {stock} != initial {initial} - sold {sold} "
                f"+ restocked {restocked}"
            )


class OrderSim:
    """The order book: one order per sale's key, and the reconciler's mark."""

    tables: Mapping[str, str] = {"orders": "key", "reconciled": "id"}
    once = frozenset({"orders"})

    def initial_rows(self) -> Tables:
        return {"orders": {}, "reconciled": {}}

    def execute(
        self, lookup: Lookup, command: Command, version: Version
    ) -> tuple[list[Change], Outcome]:
        del version
        if isinstance(command, Reconciled):
            row: Row = {"id": 1, "seq": command.seq, "key": command.key}
            return [Upsert(table="reconciled", row=row)], Outcome(status="ok")
        assert isinstance(command, RecordOrder), command
        earlier = lookup("orders", command.key)
        if earlier is not None:
            same = (earlier["book_id"], earlier["quantity"]) == (command.book_id, command.quantity)
            return [], Outcome(status="ok" if same else "key_reused")
        row = {"key": command.key, "book_id": command.book_id, "quantity": command.quantity}
        return [Upsert(table="orders", row=row)], Outcome(status="ok")

    def check(self, rows: Tables, changes: Sequence[Change]) -> None:
        del rows, changes  # (`once` keeps one order per key)
