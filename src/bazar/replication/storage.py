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
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec

from bazar.errors import InvalidRequest
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


LogRow = tuple[int, int, bytes]
"""A row of `log`: `(seq, epoch, body)`."""


def positions(conn: sqlite3.Connection) -> tuple[int, int]:
    """`(epoch, commit_seq)` as `meta` holds them, in one statement (our own database)."""
    values = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    epoch, commit_seq = int(values["epoch"]), int(values["commit_seq"])
    assert epoch >= 0
    assert commit_seq >= 0
    return epoch, commit_seq


def _commit_seq(conn: sqlite3.Connection) -> int:
    """`positions` for the hot path: one row of `meta`, by its key."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'commit_seq'").fetchone()
    commit_seq = int(row[0])
    assert commit_seq >= 0
    return commit_seq


def _log_above(conn: sqlite3.Connection, seq: int) -> list[LogRow]:
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples
    rows: list[LogRow] = cursor.execute(
        "SELECT seq, epoch, body FROM log WHERE seq > ? ORDER BY seq", (seq,)
    ).fetchall()
    return rows


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
        self._writer_thread = self._executor.submit(threading.get_ident).result()
        self._writer = _open(path, readonly=False)
        self._writer.executescript(schema_sql + LOG_SCHEMA)
        self.intent = IntentLog(path.with_name("intent.db"), path.with_name(path.name + "-wal"))
        self._recovered = False
        self._batch: Entry | None = None  # the open batch's entry (writer thread)
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

    def _on_writer(self) -> bool:
        """The caller runs on the writer thread (its one worker lives as long as the store)."""
        return threading.get_ident() == self._writer_thread

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
        assert self._on_writer(), "writes run on the writer thread only"
        assert self.machine is not None, "a store without its machine takes no batch"
        assert self._batch is None, "one batch at a time"
        entry, results = begin_batch(self._writer, self.machine, commands, version)
        self._batch = entry
        return entry, results

    def commit_batch(self, entry: Entry) -> None:
        """Writer thread."""
        assert self._on_writer(), "writes run on the writer thread only"
        assert self._batch == entry, "the COMMIT is of the batch begun"
        self._batch = None
        started = time.perf_counter()
        commit_batch(self._writer, self.intent, entry)
        self.timing("commit", time.perf_counter() - started)

    def rollback_batch(self) -> None:
        """Writer thread."""
        assert self._on_writer(), "writes run on the writer thread only"
        assert self._batch is not None, "a ROLLBACK ends a batch begun"
        self._batch = None
        rollback_batch(self._writer)

    def write_intent(self, entry: Entry) -> None:
        """Writer thread: while the batch of `entry` is open (its COMMIT queues behind)."""
        assert self._on_writer(), "writes run on the writer thread only"
        assert self._batch == entry, "the intent is the open batch's entry"
        started = time.perf_counter()
        self.intent.write(entry)
        self.timing("intent", time.perf_counter() - started)

    def save_epoch(self, epoch: int) -> None:
        """Writer thread."""
        assert self._on_writer(), "writes run on the writer thread only"
        save_epoch(self._writer, epoch, self.intent)

    def stage(self, plan: Stage) -> None:
        """Writer thread."""
        assert self._on_writer(), "writes run on the writer thread only"
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
        assert self._on_writer(), "writes run on the writer thread only"
        prune_log(self._writer, below_seq)

    def install_snapshot(self, data: bytes, epoch: int) -> None:
        """Writer thread."""
        assert self._on_writer(), "writes run on the writer thread only"
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
        commit_seq = int(row[0])
        assert commit_seq >= 0
        if commit_seq:
            assert row[1] is not None, "the entry at the commit point is kept (`prune_log`)"
        return CommitPoint(epoch=int(row[1] or 0), commit_seq=commit_seq)

    # ------------------------------------------------------------ reads (any thread)

    def load_meta(self) -> Meta:
        """At start-up (nothing writes meanwhile). Our own log, so asserted: the staged
        entries continue the committed one (`read_log` checks the run itself)."""
        epoch, commit_seq = positions(self.reader)
        staged = tuple(self.read_log(commit_seq + 1, None))
        committed = self.read_log(commit_seq, commit_seq) if commit_seq else []
        if commit_seq:
            assert len(committed) == 1, "the entry at the commit point is kept (`prune_log`)"
        commit_epoch = committed[0].epoch if committed else 0
        assert commit_epoch <= epoch, "the stored epoch covers the committed entry"
        if staged:
            assert staged[0].seq == commit_seq + 1, "staged entries follow the commit point"
            assert staged[0].epoch >= commit_epoch, "epochs never go back along the log"
        return Meta(epoch=epoch, commit_seq=commit_seq, commit_epoch=commit_epoch, staged=staged)

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
        row = self.reader.execute(
            "SELECT (SELECT min(seq) FROM log), value FROM meta WHERE key = 'commit_seq'"
        ).fetchone()
        commit_seq = int(row[1])
        if row[0] is None:
            assert commit_seq == 0, "the entry at the commit point is kept (`prune_log`)"
            return commit_seq + 1
        first_seq = int(row[0])
        # (Pruning keeps the commit point's entry; with none, staged entries start at 1.)
        assert first_seq <= max(commit_seq, 1), "the log reaches the commit point"
        return first_seq

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
            assert commit_seq >= 0
            if commit_seq:
                assert row is not None, "the snapshot holds its commit point's entry"
            data = bytearray(copy.serialize())
            # Header bytes 18-19 say WAL (2); an in-memory copy must be opened as a rollback
            # journal database (1), else SQLite cannot write it. The receiver's own file
            # stays in WAL mode: the backup API copies pages, not the journal mode.
            data[18:20] = b"\x01\x01"
            return bytes(data), commit_seq, int(row[0]) if row else 0
        finally:
            copy.close()

    def read_log(self, first_seq: int, last_seq: int | None, limit: int = 10_000) -> list[Entry]:
        """Entries from `first_seq` on (at most `limit`, up to `last_seq`). Our own log, so
        asserted: a contiguous run whose epochs never go back."""
        assert first_seq >= 1
        assert limit >= 1
        upper = last_seq if last_seq is not None else 2**62
        assert upper >= first_seq
        rows = self.reader.execute(
            "SELECT seq, epoch, body FROM log WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?",
            (first_seq, upper, limit),
        ).fetchall()
        entries = [
            Entry(epoch=row["epoch"], seq=row["seq"], changes=decode_changes(row["body"]))
            for row in rows
        ]
        for before, after in itertools.pairwise(entries):
            assert after.seq == before.seq + 1, "the log has no gap"
            assert after.epoch >= before.epoch, "epochs never go back along the log"
        return entries


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
    assert not conn.in_transaction, "a batch is never nested in another transaction"
    conn.execute("PRAGMA synchronous = NORMAL")  # (`commit_batch` syncs when it must)
    conn.execute("BEGIN IMMEDIATE")
    try:
        changes: list[Change] = []
        results: list[R] = []
        for command in commands:
            command_changes, result = machine.execute(conn, command, version)
            changes.extend(command_changes)
            results.append(result)
        assert conn.in_transaction, "a machine never ends the batch's transaction"
        if not changes:
            conn.execute("COMMIT")
            conn.execute("PRAGMA synchronous = FULL")
            return None, results
        body = encode_changes(changes)
        # Checked before it is logged: the backups will apply what the primary executed, at
        # the next seq (no gap, no seq reused).
        assert decode_changes(body) == changes, "row images survive their encoding"
        assert _commit_seq(conn) == seq - 1, "a batch logs the seq after the commit point"
        conn.execute("INSERT INTO log (seq, epoch, body) VALUES (?, ?, ?)", (seq, epoch, body))
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
    assert conn.in_transaction, "the batch's transaction is open until its COMMIT"
    conn.execute("COMMIT")
    conn.execute("PRAGMA synchronous = FULL")
    intent.committed(entry)


def rollback_batch(conn: sqlite3.Connection) -> None:
    assert conn.in_transaction, "the batch's transaction is open until its ROLLBACK"
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
        assert entry.seq > self._synced_seq, "an intent is above the last synced commit"
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
        assert entry.seq > self._synced_seq, "commits only move forward"
        assert self._unsynced < INTENT_SYNC_EVERY
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
    assert conn.in_transaction, "the intent is written while its batch is open"
    intent.write(entry)


def recover_intent(conn: sqlite3.Connection, intent: IntentLog) -> None:
    """At start-up: a primary's batch whose COMMIT an OS crash lost is in `intent.db` only;
    put it back in the log as staged, above `commit_seq`. Only when the log holds no staged
    entry: staging one (a backup's transaction, with fsync) synced every earlier commit, so
    an intent older than it is not needed, and may be stale. First the WAL is synced (after
    a process crash the OS still holds commits that had no fsync): the intent is then needed
    for nothing it does not restore."""
    assert not conn.in_transaction
    wal = intent.wal_path
    if wal.exists():
        sync_file(wal)
    commit_seq = _commit_seq(conn)
    staged = conn.execute("SELECT 1 FROM log WHERE seq > ? LIMIT 1", (commit_seq,)).fetchone()
    restore: list[Entry] = []
    if staged is None:
        for entry in intent.entries_after(commit_seq):
            if entry.seq != commit_seq + 1 + len(restore):
                break
            restore.append(entry)
    if restore:
        rows = [(entry.seq, entry.epoch, encode_changes(entry.changes)) for entry in restore]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT INTO log (seq, epoch, body) VALUES (?, ?, ?)", rows)
            # Read back: the log above the commit point is exactly the run restored.
            assert _log_above(conn, commit_seq) == rows, "the restored run reads back as written"
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
    the entries that are now committed, and record the epoch (the highest seen: as every
    write of it here, never back) and the commit point.

    The plan is the core's (`Replica.plan_append`; what the entries hold is a peer's, for
    the core to validate), asserted against the positions stored: the commit point never
    goes back, only staged entries are truncated or staged over, the entries applied are
    the next ones and are those logged, and the entries staged read back as written."""
    assert not conn.in_transaction, "a Stage never runs inside an open batch"
    rows = [(entry.seq, entry.epoch, encode_changes(entry.changes)) for entry in entries]
    conn.execute("BEGIN IMMEDIATE")
    try:
        commit_before = _commit_seq(conn)
        assert commit_seq >= commit_before, "the commit point never goes back"
        applied = [entry.seq for entry in apply]
        assert applied == list(range(commit_before + 1, commit_seq + 1)), "apply the next ones"
        if truncate_from is not None:
            assert truncate_from > commit_before, "only staged entries are truncated"
            conn.execute("DELETE FROM log WHERE seq >= ?", (truncate_from,))
        if rows:
            assert rows[0][0] > commit_before, "a committed entry is never staged over"
        conn.executemany("INSERT INTO log (seq, epoch, body) VALUES (?, ?, ?)", rows)
        if rows or apply:
            _check_log_above(conn, commit_before, apply, rows)
        for entry in apply:
            for change in entry.changes:
                write_row(conn, tables, change)
        conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'epoch'", (epoch,))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'commit_seq'", (commit_seq,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _check_log_above(
    conn: sqlite3.Connection, commit_seq: int, apply: Sequence[Entry], staged: list[LogRow]
) -> None:
    """Inside a Stage, read back the log above the commit point (pages it just wrote): a
    contiguous run that starts with the entries applied and ends with those staged."""
    logged = _log_above(conn, commit_seq)
    seqs = [row[0] for row in logged]
    assert seqs == list(range(commit_seq + 1, commit_seq + 1 + len(seqs))), "no gap in the log"
    assert len(logged) >= len(apply), "an entry applied is in the log"
    for entry, row in zip(apply, logged, strict=False):
        assert row[1] == entry.epoch, "an entry applied is the one logged"
        assert row[2] == encode_changes(entry.changes), "an entry applied is the one logged"
    if staged:
        assert logged[-len(staged) :] == staged, "the entries staged read back as written"


def prune_log(conn: sqlite3.Connection, below_seq: int) -> None:
    """Forget committed entries below `below_seq` (a replica that needs them gets a snapshot).
    The commit point's entry stays: `commit_point`, `snapshot` and the Appends' `prev_epoch`
    read its epoch."""
    assert not conn.in_transaction, "a prune inside a batch would roll back with it"
    row = conn.execute(
        "SELECT (SELECT min(seq) FROM log), value FROM meta WHERE key = 'commit_seq'"
    ).fetchone()
    first_seq, commit_seq = row[0], int(row[1])
    assert below_seq <= commit_seq, "never a staged entry, nor the commit point's"
    pruned = conn.execute("DELETE FROM log WHERE seq < ?", (below_seq,)).rowcount
    assert pruned == (0 if first_seq is None else max(0, below_seq - first_seq)), "no gap"


def install_snapshot(conn: sqlite3.Connection, data: bytes, epoch: int) -> None:
    """Replace the whole database by a primary's snapshot (one backup-API copy, under the
    writer's lock), keeping the highest epoch this replica has seen.

    Raises: InvalidRequest when `data` (a peer's bytes) is not a committed database past
    our commit point (`_check_snapshot`); nothing is replaced then."""
    assert not conn.in_transaction, "a snapshot never replaces an open batch"
    epoch_before, commit_before = positions(conn)
    source = sqlite3.connect(":memory:")
    try:
        try:
            source.deserialize(data)
            commit_seq = _check_snapshot(source, commit_before)
        except sqlite3.DatabaseError as error:
            raise InvalidRequest(f"the snapshot is not a database: {error}") from None
        highest = max(epoch, epoch_before)
        source.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'epoch'", (highest,))
        source.commit()
        source.backup(conn)
    finally:
        source.close()
    epoch_after, commit_after = positions(conn)  # read back: our own database now
    assert commit_after == commit_seq, "the snapshot's commit point is installed"
    assert commit_after > commit_before, "a snapshot never takes the commit point back"
    assert epoch_after >= epoch_before, "a snapshot never takes the epoch back"


def _check_snapshot(source: sqlite3.Connection, commit_before: int) -> int:
    """A peer's snapshot, validated (not asserted): its commit point is past ours, its log
    holds that entry and nothing staged after it (a snapshot taken late, once its sender
    had become a backup, would give us staged entries the core does not know of).

    Raises: InvalidRequest, sqlite3.DatabaseError."""
    row = source.execute(
        "SELECT meta.value, log.epoch, (SELECT max(seq) FROM log) FROM meta"
        " LEFT JOIN log ON log.seq = meta.value WHERE meta.key = 'commit_seq'"
    ).fetchone()
    if row is None or not isinstance(row[0], int):
        raise InvalidRequest("the snapshot has no commit point")
    commit_seq: int = row[0]
    if commit_seq <= commit_before:
        raise InvalidRequest(f"a snapshot at seq {commit_seq} is not past ours ({commit_before})")
    if row[1] is None or row[2] != commit_seq:
        raise InvalidRequest(f"the snapshot's log does not end at its commit point {commit_seq}")
    return commit_seq


def save_epoch(conn: sqlite3.Connection, epoch: int, intent: IntentLog) -> None:
    conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'epoch'", (epoch,))
    if conn.in_transaction:
        # Inside an open batch, whose COMMIT would skip the fsync: the epoch must be on disk
        # once committed (rule 4), and the intent does not hold it.
        intent.must_sync()
