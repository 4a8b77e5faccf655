"""SQLite adapter: the only module that opens databases.

One database per replica, WAL, `synchronous=FULL` (a commit is on disk before it is
acknowledged). Every write runs on one dedicated writer thread, so the event loop never waits
for an fsync; point reads run inline on a second, read-only connection, which in WAL mode sees
only committed transactions and never waits for the writer.

Layout shared by both tiers: the tier's state tables, plus
- `log(seq, epoch, body)`: replicated entries (row images), committed and, on backups, staged;
- `meta(key, value)`: `epoch` (the highest view this replica has seen) and `commit_seq`.

Rules: on a primary the state tables hold only committed writes (its write transaction stays
open until every backup has staged the entry). On a backup the state tables hold entries up to
its `commit_seq`; entries above it are *staged* in `log` only, so rolling them back is a delete.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

import msgspec

from bazar.wire import Change, Entry, Row, TableDigest, Upsert, Version

T = TypeVar("T")
C = TypeVar("C", contravariant=True)
R = TypeVar("R", covariant=True)

_changes_encoder = msgspec.json.Encoder()
_changes_decoder = msgspec.json.Decoder(list[Change])

LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL CHECK (epoch >= 1),
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', 0), ('commit_seq', 0);
"""


class Machine(Protocol[C, R]):
    """A tier's state machine, executed inside the primary's write transaction."""

    tables: Mapping[str, str]
    """Replicated table name -> its key column."""

    def execute(
        self, conn: sqlite3.Connection, command: C, version: Version
    ) -> tuple[list[Change], R]: ...


class Meta(msgspec.Struct, frozen=True, kw_only=True):
    """What a replica knows of its own log at start-up."""

    epoch: int
    commit_seq: int
    commit_epoch: int
    last_seq: int
    last_epoch: int
    staged: tuple[Entry, ...]


def encode_changes(changes: Sequence[Change]) -> bytes:
    return _changes_encoder.encode(changes)


def decode_changes(body: bytes) -> list[Change]:
    return _changes_decoder.decode(body)


def row_dict(row: sqlite3.Row) -> Row:
    return {key: row[key] for key in row.keys()}  # noqa: SIM118 (sqlite3.Row has no items())


def write_row(conn: sqlite3.Connection, tables: Mapping[str, str], change: Change) -> None:
    """Apply one row image. The same function runs on the primary and on backups."""
    if change.table not in tables:
        raise ValueError(f"unknown table {change.table!r}")
    if isinstance(change, Upsert):
        columns = ", ".join(change.row)
        marks = ", ".join("?" for _ in change.row)
        conn.execute(
            f"INSERT OR REPLACE INTO {change.table} ({columns}) VALUES ({marks})",
            tuple(change.row.values()),
        )
    else:
        conn.execute(f"DELETE FROM {change.table} WHERE {tables[change.table]} = ?", (change.key,))


def _open(path: Path, *, readonly: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 5000")
    if readonly:
        conn.execute("PRAGMA query_only = 1")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
    return conn


class Store:
    """One replica's database: a writer thread with its connection, and a reader."""

    def __init__(self, path: Path, schema_sql: str, tables: Mapping[str, str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.tables = dict(tables)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-{path.parent.name}")
        self._writer = _open(path, readonly=False)
        self._writer.executescript(schema_sql + LOG_SCHEMA)
        self.reader = _open(path, readonly=True)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._writer.close()
        self.reader.close()

    async def write(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run `function(writer connection)` on the writer thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, self._writer)

    def write_blocking(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """For start-up only, before the event loop serves requests."""
        return self._executor.submit(function, self._writer).result()

    # ------------------------------------------------------------ reads (any thread)

    def load_meta(self) -> Meta:
        conn = self.reader
        values = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        last = conn.execute("SELECT seq, epoch FROM log ORDER BY seq DESC LIMIT 1").fetchone()
        commit_seq = int(values["commit_seq"])
        staged = tuple(self.read_log(commit_seq + 1, None))
        committed = self.read_log(commit_seq, commit_seq) if commit_seq else []
        return Meta(
            epoch=int(values["epoch"]),
            commit_seq=commit_seq,
            commit_epoch=committed[0].epoch if committed else 0,
            last_seq=int(last["seq"]) if last else 0,
            last_epoch=int(last["epoch"]) if last else 0,
            staged=staged,
        )

    def digest(self) -> dict[str, TableDigest]:
        """Row count and SHA-256 of every replicated table, rows in key order."""
        digests = {}
        for table, key in sorted(self.tables.items()):
            hasher = hashlib.sha256()
            rows = 0
            for row in self.reader.execute(f"SELECT * FROM {table} ORDER BY {key}"):
                hasher.update(repr(tuple(row)).encode())
                rows += 1
            digests[table] = TableDigest(rows=rows, sha256=hasher.hexdigest())
        return digests

    def first_log_seq(self) -> int:
        """The oldest entry still in the log (older ones were pruned), or the next seq to
        come when the log is empty."""
        row = self.reader.execute("SELECT min(seq) FROM log").fetchone()
        if row[0] is not None:
            return int(row[0])
        commit = self.reader.execute("SELECT value FROM meta WHERE key = 'commit_seq'").fetchone()
        return int(commit[0]) + 1

    def snapshot(self) -> tuple[bytes, int, int]:
        """A consistent copy of the committed database (SQLite's backup API), with the commit
        point it holds: `(bytes, commit_seq, commit_epoch)`."""
        copy = sqlite3.connect(":memory:")
        try:
            self.reader.backup(copy)
            commit_seq = int(
                copy.execute("SELECT value FROM meta WHERE key = 'commit_seq'").fetchone()[0]
            )
            row = copy.execute("SELECT epoch FROM log WHERE seq = ?", (commit_seq,)).fetchone()
            data = bytearray(copy.serialize())
            # Header bytes 18-19 say WAL (2); an in-memory copy must be opened as a rollback
            # journal database (1), else SQLite cannot write it. The receiver's own file
            # stays in WAL mode: the backup API copies pages, not the journal mode.
            data[18:20] = b"\x01\x01"
            return bytes(data), commit_seq, int(row[0]) if row else 0
        finally:
            copy.close()

    def read_log(self, first_seq: int, last_seq: int | None, limit: int = 10_000) -> list[Entry]:
        upper = last_seq if last_seq is not None else 2**62
        rows = self.reader.execute(
            "SELECT seq, epoch, body FROM log WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?",
            (first_seq, upper, limit),
        ).fetchall()
        return [
            Entry(epoch=row["epoch"], seq=row["seq"], changes=decode_changes(row["body"]))
            for row in rows
        ]


# ---------------------------------------------------------------- writer-thread functions


def begin_batch(
    conn: sqlite3.Connection,
    machine: Machine[C, R],
    commands: Sequence[C],
    version: Version,
) -> tuple[Entry | None, list[R]]:
    """Open a write transaction, execute `commands`, and log their effects as one entry.

    The transaction is left OPEN when an entry is returned: the caller replicates it and then
    calls `commit_batch`, so that readers never see a write that is not on every backup.
    With no effects (replays, unknown books) nothing is logged and the transaction is closed.
    """
    epoch, seq = version
    conn.execute("BEGIN IMMEDIATE")
    try:
        changes: list[Change] = []
        results: list[R] = []
        for command in commands:
            command_changes, result = machine.execute(conn, command, version)
            changes.extend(command_changes)
            results.append(result)
        if not changes:
            conn.execute("COMMIT")
            return None, results
        conn.execute(
            "INSERT INTO log (seq, epoch, body) VALUES (?, ?, ?)",
            (seq, epoch, encode_changes(changes)),
        )
        conn.execute("UPDATE meta SET value = ? WHERE key = 'commit_seq'", (seq,))
        conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'epoch'", (epoch,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return Entry(epoch=epoch, seq=seq, changes=changes), results


def commit_batch(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")


def rollback_batch(conn: sqlite3.Connection) -> None:
    conn.execute("ROLLBACK")


def stage_entries(
    conn: sqlite3.Connection,
    tables: Mapping[str, str],
    *,
    epoch: int,
    truncate_from: int | None,
    entries: Sequence[Entry],
    apply: Sequence[Entry],
    commit_seq: int,
) -> None:
    """Backup side, one transaction: drop a stale staged suffix, stage new entries, apply
    the entries that are now committed, and record the epoch and commit point."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if truncate_from is not None:
            conn.execute("DELETE FROM log WHERE seq >= ?", (truncate_from,))
        conn.executemany(
            "INSERT INTO log (seq, epoch, body) VALUES (?, ?, ?)",
            [(entry.seq, entry.epoch, encode_changes(entry.changes)) for entry in entries],
        )
        for entry in apply:
            for change in entry.changes:
                write_row(conn, tables, change)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (epoch,))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'commit_seq'", (commit_seq,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def prune_log(conn: sqlite3.Connection, below_seq: int) -> None:
    """Forget committed entries below `below_seq` (a replica that needs them gets a snapshot)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'commit_seq'").fetchone()
    assert below_seq <= int(row[0]) + 1  # never a staged entry
    conn.execute("DELETE FROM log WHERE seq < ?", (below_seq,))


def install_snapshot(conn: sqlite3.Connection, data: bytes, epoch: int) -> None:
    """Replace the whole database by a primary's snapshot (one backup-API copy, under the
    writer's lock), keeping the highest epoch this replica has seen."""
    source = sqlite3.connect(":memory:")
    try:
        source.deserialize(data)
        source.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'epoch'", (epoch,))
        source.commit()
        source.backup(conn)
    finally:
        source.close()


def save_epoch(conn: sqlite3.Connection, epoch: int) -> None:
    conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'epoch'", (epoch,))
