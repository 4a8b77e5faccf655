"""The initial catalog: a seed file (JSON or TOML, the packaged one by default), loaded into
an empty database at the same position (seq 0) on every replica."""

from __future__ import annotations

import json
import sqlite3
import tomllib
from importlib import resources
from pathlib import Path

import msgspec

from bazar.money import cost_to_cents


class SeedBook(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: int
    title: str
    topic: str
    stock: int
    cost: int | float


class SeedFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    books: list[SeedBook]


def load_seed(path: str | None) -> list[SeedBook]:
    """Books from a JSON (list or {"books": [...]}) or TOML ([[books]]) file.

    Raises: ValueError for a malformed file.
    """
    if path is None:
        text = (resources.files("bazar") / "data" / "catalog.toml").read_text()
        raw: object = tomllib.loads(text)
    elif Path(path).suffix.lower() == ".toml":
        raw = tomllib.loads(Path(path).read_text())
    else:
        raw = json.loads(Path(path).read_text())
    if isinstance(raw, list):
        raw = {"books": raw}
    try:
        books = msgspec.convert(raw, SeedFile).books
    except msgspec.ValidationError as error:
        raise ValueError(f"bad catalog file: {error}") from error
    for book in books:
        if book.id <= 0 or book.stock < 0 or cost_to_cents(book.cost) is None:
            raise ValueError(f"bad book in catalog file: {book}")
    if len({book.id for book in books}) != len(books):
        raise ValueError("duplicate book ids in catalog file")
    return books


def seed(conn: sqlite3.Connection, books: list[SeedBook]) -> bool:
    """Load the initial catalog into an empty database (seq 0, identical on every replica).
    Returns False when books were already there."""
    if conn.execute("SELECT 1 FROM books LIMIT 1").fetchone():
        return False
    conn.execute("BEGIN IMMEDIATE")
    for book in books:
        cents = cost_to_cents(book.cost)
        assert cents is not None
        conn.execute(
            "INSERT INTO books (id, title, topic, stock, cost_cents) VALUES (?, ?, ?, ?, ?)",
            (book.id, book.title, book.topic, book.stock, cents),
        )
    conn.execute("COMMIT")
    return True
