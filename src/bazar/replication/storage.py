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

The primary's fsync overlaps the backups' staging: while its batch's transaction is open it
makes the entry durable in a second database, `intent.db` (`IntentLog`), as the Appends
travel; the batch's COMMIT then needs no fsync of its own (`synchronous=NORMAL` for that one
transaction; every `INTENT_SYNC_EVERY` batches, or when the intent is missing, the WAL is
synced). A process crash loses nothing (the OS holds the WAL); an OS crash may lose such a
COMMIT, and start-up then restores the entry from `intent.db` as *staged* (`recover_intent`):
what a backup holding it would have, so the protocol's rules for staged entries (promotion,
truncation) apply unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec

from bazar.replication.driver import Meta
from bazar.replication.ready import Stage
from bazar.wire import Change, CommitPoint, Entry, Row, TableDigest, Upsert, Version

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

INTENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS intent (
    seq INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL CHECK (epoch >= 1),
    body BLOB NOT NULL
);
"""
INTENT_SYNC_EVERY = 64
"""Batches committed without an fsync of their own between two syncs of the WAL: bounds the
intent log (entries at or below the last synced commit are forgotten)."""


class Machine(Protocol[C, R]):
    """A tier's state machine, executed inside the primary's write transaction."""

    tables: Mapping[str, str]
    """Replicated table name -> its key column."""

    def execute(
        self, conn: sqlite3.Connection, command: C, version: Version
    ) -> tuple[list[Change], R]: ...


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


Timing = Callable[[str, float], None]
"""Observes how long a writer-thread transaction took: `(kind, seconds)`, kind one of
`commit`, `stage`, `intent` (the metrics' fsync histogram)."""


def _untimed(kind: str, seconds: float) -> None:
    del kind, seconds


class Store:
    """One replica's database: a writer thread with its connection, and a reader.

    Implements the driver's `Store` protocol (`replication/driver.py`): its writing methods
    run on the writer thread only (the runtime submits them there with `write`); its
    reading methods on any thread, through the read-only connection."""

    def __init__(
        self,
        path: Path,
        schema_sql: str,
        tables: Mapping[str, str],
        machine: Machine[Any, Any] | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.tables = dict(tables)
        self.machine = machine
        self.timing: Timing = _untimed
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-{path.parent.name}")
        self._writer = _open(path, readonly=False)
        self._writer.executescript(schema_sql + LOG_SCHEMA)
        self.intent = IntentLog(path.with_name("intent.db"), path.with_name(path.name + "-wal"))
        self._recovered = False
        self.reader = _open(path, readonly=True)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._writer.close()
        self.intent.close()
        self.reader.close()

    def write(self, function: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run `function(writer connection)` on the writer thread. Submitted at once (in
        the order of the calls), so a write never overtakes one submitted before it."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, function, self._writer)

    def write_blocking(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """For start-up only, before the event loop serves requests."""
        return self._executor.submit(function, self._writer).result()

    # ------------------------------------------------------------ the driver's protocol

    def recover(self) -> None:
        """At start-up (`storage.recover_intent`), once."""
        assert not self._recovered
        self.write_blocking(partial(recover_intent, intent=self.intent))
        self._recovered = True

    def begin_batch(
        self, commands: Sequence[Any], version: Version
    ) -> tuple[Entry | None, list[Any]]:
        """Writer thread."""
        assert self.machine is not None, "a store without its machine takes no batch"
        return begin_batch(self._writer, self.machine, commands, version)

    def commit_batch(self, entry: Entry) -> None:
        """Writer thread."""
        started = time.perf_counter()
        commit_batch(self._writer, self.intent, entry)
        self.timing("commit", time.perf_counter() - started)

    def rollback_batch(self) -> None:
        """Writer thread."""
        rollback_batch(self._writer)

    def write_intent(self, entry: Entry) -> None:
        """Writer thread."""
        started = time.perf_counter()
        self.intent.write(entry)
        self.timing("intent", time.perf_counter() - started)

    def save_epoch(self, epoch: int) -> None:
        """Writer thread."""
        save_epoch(self._writer, epoch, self.intent)

    def stage(self, plan: Stage) -> None:
        """Writer thread."""
        started = time.perf_counter()
        stage_entries(
            self._writer,
            self.tables,
            epoch=plan.epoch,
            truncate_from=plan.truncate_from,
            entries=plan.stage,
            apply=plan.apply,
            commit_seq=plan.commit_seq,
        )
        self.timing("stage", time.perf_counter() - started)

    def prune(self, below_seq: int) -> None:
        """Writer thread."""
        prune_log(self._writer, below_seq)

    def install_snapshot(self, data: bytes, epoch: int) -> None:
        """Writer thread."""
        install_snapshot(self._writer, data, epoch)

    def commit_point(self) -> CommitPoint:
        """The locally committed position `(epoch of its entry, seq)`, read from the
        database in one statement: on a primary a reader can only have seen data up to this
        point (same snapshot rule as every read). Not the current epoch: a view change that
        keeps the primary must not make an older state look newer than a pending write's
        cache invalidation."""
        row = self.reader.execute(
            "SELECT meta.value, log.epoch FROM meta LEFT JOIN log ON log.seq = meta.value"
            " WHERE meta.key = 'commit_seq'"
        ).fetchone()
        return CommitPoint(epoch=int(row[1] or 0), commit_seq=int(row[0]))

    # ------------------------------------------------------------ reads (any thread)

    def load_meta(self) -> Meta:
        conn = self.reader
        values = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        commit_seq = int(values["commit_seq"])
        staged = tuple(self.read_log(commit_seq + 1, None))
        committed = self.read_log(commit_seq, commit_seq) if commit_seq else []
        return Meta(
            epoch=int(values["epoch"]),
            commit_seq=commit_seq,
            commit_epoch=committed[0].epoch if committed else 0,
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
    conn.execute("PRAGMA synchronous = NORMAL")  # (`commit_batch` syncs when it must)
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
            conn.execute("PRAGMA synchronous = FULL")
            return None, results
        conn.execute(
            "INSERT INTO log (seq, epoch, body) VALUES (?, ?, ?)",
            (seq, epoch, encode_changes(changes)),
        )
        conn.execute("UPDATE meta SET value = ? WHERE key = 'commit_seq'", (seq,))
        conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'epoch'", (epoch,))
    except BaseException:
        conn.execute("ROLLBACK")
        conn.execute("PRAGMA synchronous = FULL")
        raise
    return Entry(epoch=epoch, seq=seq, changes=changes), results


def commit_batch(conn: sqlite3.Connection, intent: IntentLog, entry: Entry) -> None:
    """COMMIT the open batch; without an fsync when `intent.db` holds its entry (written
    while the backups staged theirs), else with one, as every other transaction has."""
    conn.execute("COMMIT")
    conn.execute("PRAGMA synchronous = FULL")
    intent.committed(entry)


def rollback_batch(conn: sqlite3.Connection) -> None:
    conn.execute("ROLLBACK")
    conn.execute("PRAGMA synchronous = FULL")


class IntentLog:
    """The primary's own durable copy of the entry it is replicating.

    A second database, so that it can commit while the batch's transaction stays open. Runs
    on the writer thread only, in submission order, so `commit_batch` always finds the
    intent of its entry written (or failed) before it."""

    def __init__(self, path: Path, wal_path: Path) -> None:
        self._conn = _open(path, readonly=False)
        self._conn.executescript(INTENT_SCHEMA)
        self.wal_path = wal_path
        self._durable: Entry | None = None  # the entry whose intent is on disk
        self._unsynced = 0  # batches committed since the main WAL was last synced
        self._synced_seq = 0

    def close(self) -> None:
        self._conn.close()

    def write(self, entry: Entry) -> None:
        """Make `entry` durable here (fsync), dropping what a synced commit already holds."""
        self._durable = None
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "DELETE FROM intent WHERE seq >= ? OR seq <= ?", (entry.seq, self._synced_seq)
            )
            conn.execute(
                "INSERT INTO intent (seq, epoch, body) VALUES (?, ?, ?)",
                (entry.seq, entry.epoch, encode_changes(entry.changes)),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._durable = entry

    def committed(self, entry: Entry) -> None:
        """After a NORMAL commit of `entry`: sync the WAL unless the intent covers it."""
        covered = self._durable == entry
        self._durable = None
        self._unsynced += 1
        if covered and self._unsynced < INTENT_SYNC_EVERY:
            return
        sync_file(self.wal_path)
        self._unsynced = 0
        self._synced_seq = entry.seq

    def must_sync(self) -> None:
        self._durable = None

    def entries_after(self, seq: int) -> list[Entry]:
        rows = self._conn.execute(
            "SELECT seq, epoch, body FROM intent WHERE seq > ? ORDER BY seq", (seq,)
        ).fetchall()
        return [
            Entry(epoch=row["epoch"], seq=row["seq"], changes=decode_changes(row["body"]))
            for row in rows
        ]

    def clear(self) -> None:
        self._conn.execute("DELETE FROM intent")


def sync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_intent(conn: sqlite3.Connection, intent: IntentLog, entry: Entry) -> None:
    """Writer-thread function (the main connection is unused: its batch stays open)."""
    del conn
    intent.write(entry)


def recover_intent(conn: sqlite3.Connection, intent: IntentLog) -> None:
    """At start-up: a primary's batch whose COMMIT an OS crash lost is in `intent.db` only;
    put it back in the log as staged, above `commit_seq`. Only when the log holds no staged
    entry: staging one (a backup's transaction, with fsync) synced every earlier commit, so
    an intent older than it is not needed, and may be stale. First the WAL is synced (after
    a process crash the OS still holds commits that had no fsync): the intent is then needed
    for nothing it does not restore."""
    wal = intent.wal_path
    if wal.exists():
        sync_file(wal)
    commit_seq = int(conn.execute("SELECT value FROM meta WHERE key = 'commit_seq'").fetchone()[0])
    staged = conn.execute("SELECT 1 FROM log WHERE seq > ? LIMIT 1", (commit_seq,)).fetchone()
    restore: list[Entry] = []
    if staged is None:
        for entry in intent.entries_after(commit_seq):
            if entry.seq != commit_seq + 1 + len(restore):
                break
            restore.append(entry)
    if restore:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO log (seq, epoch, body) VALUES (?, ?, ?)",
                [(entry.seq, entry.epoch, encode_changes(entry.changes)) for entry in restore],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    intent.clear()


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


def save_epoch(conn: sqlite3.Connection, epoch: int, intent: IntentLog) -> None:
    conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'epoch'", (epoch,))
    if conn.in_transaction:
        # Inside an open batch, whose COMMIT would skip the fsync: the epoch must be on disk
        # once committed (rule 4), and the intent does not hold it.
        intent.must_sync()
