"""A replica's durable store in the simulator, and the small bookstore it replicates.

Why: the simulator must lose exactly what a real replica loses in a crash. So this store
keeps the durability rules of `runtime.py` + `storage.py`, not a simplification of them:
- the primary's batch runs in an open transaction (`begin_batch`) that only `CommitBatch`
  makes durable; until then readers, `read_log` and a crash see nothing of it;
- `SaveEpoch` runs on the writer connection, so while a batch is open it joins that
  transaction and shares its fate (COMMIT or ROLLBACK), as `save_epoch` does in SQLite;
- `Stage` is one transaction (`stage_entries`): truncate, stage, apply, epoch, commit_seq;
  it cannot start inside an open batch (SQLite refuses a nested BEGIN).
- The primary's intent (`storage.IntentLog`) is durable as soon as the batch is proposed; a
  `CommitBatch` whose intent holds its entry is *unsynced* (no fsync) unless it is the
  `INTENT_SYNC_EVERY`-th; every other write syncs, and with it every earlier commit (one WAL).
  `lose_unsynced` is what an OS crash does: the unsynced commits are undone, and
  `recover_intent` at the next start puts their entries back as staged.

The state machine is a tier's (`sim_machines.py`). Checked on every apply (a `StoreError`
is a violation): a key of an idempotency record is never written twice, and the machine's
own invariants (the catalog's: stock >= 0 and `stock == initial - sold + restocked`).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bazar.replication.driver import Meta
from bazar.replication.ready import Stage
from bazar.replication.storage import INTENT_SYNC_EVERY
from bazar.testing.sim_machines import (
    Buy,
    CatalogSim,
    Command,
    Outcome,
    Restock,
    SimMachine,
    StoreError,
    Tables,
    as_int,
    book_row,
)
from bazar.wire import Change, CommitPoint, Entry, Row, Upsert, Version

READ_LOG_LIMIT = 10_000

__all__ = ["Buy", "Command", "Outcome", "Restock", "SimStore", "StoreError", "as_int", "book_row"]


@dataclass(frozen=True, slots=True)
class SnapshotData:
    """A replica's committed database, as the SQLite backup API copies it."""

    epoch: int
    commit_seq: int
    log: dict[int, Entry]
    rows: Tables


@dataclass(frozen=True, slots=True)
class Undo:
    """What an unsynced commit changed, to lose it again: the rows it replaced (None: the
    row was new) and the commit point before it."""

    seq: int
    commit_seq: int
    rows: tuple[tuple[str, int | str, Row | None], ...]


@dataclass(slots=True)
class OpenBatch:
    """The primary's open write transaction: the entry it logged, and an epoch that a
    `SaveEpoch` wrote inside it."""

    entry: Entry
    epoch: int


@dataclass(slots=True)
class SimStore:
    """Durable state of one replica (everything but `open`, which a crash drops)."""

    initial: Mapping[int, int] = field(default_factory=dict)
    """The catalog's initial stocks (when no other `machine` is given)."""
    machine: SimMachine | None = None
    epoch: int = 0
    commit_seq: int = 0
    log: dict[int, Entry] = field(default_factory=dict)
    rows: Tables = field(default_factory=dict)
    open: OpenBatch | None = None
    intent: dict[int, Entry] = field(default_factory=dict)
    intent_durable: Entry | None = None  # (the IntentLog's memory: a crash resets it)
    unsynced: list[Undo] = field(default_factory=list)
    synced_commit_seq: int = 0
    unsafe_no_intent: bool = False
    """A deliberate bug, for the simulator's controls only: commit without an fsync and
    without the intent that makes that safe."""

    def __post_init__(self) -> None:
        if self.machine is None:
            self.machine = CatalogSim(self.initial)
        if not self.rows:
            self.rows = self.machine.initial_rows()

    @property
    def state(self) -> SimMachine:
        assert self.machine is not None
        return self.machine

    # ---------------------------------------------------------------- the driver's protocol

    @property
    def tables(self) -> Mapping[str, str]:
        """Replicated table name -> its key column."""
        return self.state.tables

    def recover(self) -> None:
        self.recover_intent()

    def load_meta(self) -> Meta:
        return Meta(
            epoch=self.epoch,
            commit_seq=self.commit_seq,
            commit_epoch=self.commit_epoch,
            staged=tuple(self.staged),
        )

    def commit_point(self) -> CommitPoint:
        """`Store.commit_point`: what a reader sees (the open batch is invisible)."""
        return CommitPoint(epoch=self.commit_epoch, commit_seq=self.commit_seq)

    def rollback_batch(self) -> None:
        self.abort_batch()

    def install_snapshot(self, data: bytes, epoch: int) -> None:
        snapshot = pickle.loads(data)
        assert isinstance(snapshot, SnapshotData)
        self.install(snapshot, epoch)

    def snapshot(self) -> tuple[bytes, int, int]:
        """`Store.snapshot`: a copy of what a reader sees (the open batch is invisible), as
        bytes, as the SQLite backup API gives them."""
        data = SnapshotData(
            epoch=self.epoch,
            commit_seq=self.commit_seq,
            log=dict(self.log),
            rows={name: dict(rows) for name, rows in self.rows.items()},
        )
        return pickle.dumps(data), self.commit_seq, self.commit_epoch

    # ---------------------------------------------------------------- reads (committed)

    def read_log(
        self, first_seq: int, last_seq: int | None, limit: int = READ_LOG_LIMIT
    ) -> list[Entry]:
        """Committed entries from `first_seq` that the log still holds (the core's `Log`)."""
        upper = self.commit_seq if last_seq is None else min(last_seq, self.commit_seq)
        found = [self.log[seq] for seq in range(first_seq, upper + 1) if seq in self.log]
        return found[:limit]

    def first_log_seq(self) -> int:
        """The oldest entry not pruned (the next seq when the log is empty)."""
        return min(self.log, default=self.commit_seq + 1)

    @property
    def staged(self) -> list[Entry]:
        return [self.log[seq] for seq in sorted(self.log) if seq > self.commit_seq]

    @property
    def commit_epoch(self) -> int:
        entry = self.log.get(self.commit_seq)
        return entry.epoch if entry is not None else 0

    def digest(self) -> tuple[int, tuple[tuple[str, tuple[tuple[int | str, Row], ...]], ...]]:
        """Everything replicated, comparable between replicas."""
        tables = tuple(
            (name, tuple(sorted(rows.items(), key=lambda item: str(item[0]))))
            for name, rows in sorted(self.rows.items())
        )
        return self.commit_seq, tables

    # ---------------------------------------------------------------- the primary's batch

    def begin_batch(
        self, commands: Sequence[Command], version: Version
    ) -> tuple[Entry | None, list[Outcome]]:
        """Execute `commands` in an open transaction; None (and no transaction) when they
        change nothing (replays)."""
        if self.open is not None:
            raise StoreError("a batch began inside an open batch")
        overlay: dict[tuple[str, int | str], Row] = {}

        def lookup(table: str, key: int | str) -> Row | None:
            return overlay.get((table, key), self.rows[table].get(key))

        changes: list[Change] = []
        results: list[Outcome] = []
        for command in commands:
            made, result = self.state.execute(lookup, command, version)
            for change in made:
                assert isinstance(change, Upsert)
                overlay[(change.table, self._key(change))] = change.row
            changes += made
            results.append(result)
        if not changes:
            return None, results
        entry = Entry(epoch=version[0], seq=version[1], changes=changes)
        self.open = OpenBatch(entry=entry, epoch=version[0])
        return entry, results

    # ---------------------------------------------------------------- persist effects

    def save_epoch(self, epoch: int) -> None:
        if self.open is not None:
            self.open.epoch = max(self.open.epoch, epoch)  # inside the open transaction
            self.intent_durable = None  # (storage.save_epoch: its COMMIT must sync)
        else:
            self.epoch = max(self.epoch, epoch)
            self.sync()

    def commit_batch(self, entry: Entry) -> None:
        batch = self.open
        if batch is None or batch.entry != entry:
            raise StoreError(f"CommitBatch of seq {entry.seq} without its open batch")
        if entry.seq != self.commit_seq + 1 or entry.seq in self.log:
            raise StoreError(f"batch seq {entry.seq} after commit_seq {self.commit_seq}")
        self.open = None
        undo = Undo(
            seq=entry.seq,
            commit_seq=self.commit_seq,
            rows=tuple(
                (change.table, key, self.rows[change.table].get(key))
                for change in entry.changes
                if isinstance(change, Upsert)
                for key in (self._key(change),)
            ),
        )
        self.log[entry.seq] = entry
        self._apply(entry)
        self.commit_seq = entry.seq
        self.epoch = max(self.epoch, batch.epoch)
        covered = self.intent_durable == entry
        self.intent_durable = None
        if covered and len(self.unsynced) + 1 < INTENT_SYNC_EVERY:
            self.unsynced.append(undo)
        else:
            self.sync()

    # ---------------------------------------------------------------- durability

    def write_intent(self, entry: Entry) -> None:
        """`IntentLog.write`: durable at once (the real COMMIT queues behind it)."""
        self.intent_durable = entry
        if self.unsafe_no_intent:
            return
        stale = [seq for seq in self.intent if not self.synced_commit_seq < seq < entry.seq]
        for seq in stale:
            del self.intent[seq]
        self.intent[entry.seq] = entry

    def sync(self) -> None:
        """Any write with an fsync: every earlier commit is on disk with it."""
        self.unsynced.clear()
        self.synced_commit_seq = self.commit_seq

    def lose_unsynced(self) -> None:
        """An OS crash: the commits made without an fsync never reached the disk."""
        assert self.open is None
        for undo in reversed(self.unsynced):
            assert self.commit_seq == undo.seq
            del self.log[undo.seq]
            for table, key, row in reversed(undo.rows):
                if row is None:
                    del self.rows[table][key]
                else:
                    self.rows[table][key] = row
            self.commit_seq = undo.commit_seq
        self.unsynced.clear()
        self.check_all()
        self.intent_durable = None

    def recover_intent(self) -> None:
        """`storage.recover_intent`, at start-up: sync what the OS still holds, then put
        back the intent above the commit point."""
        self.intent_durable = None
        self.sync()
        if not self.staged:
            seq = self.commit_seq + 1
            while seq in self.intent:
                self.log[seq] = self.intent[seq]
                seq += 1
        self.intent.clear()

    def abort_batch(self) -> None:
        if self.open is None:
            raise StoreError("ROLLBACK without an open batch")
        self.open = None
        self.intent_durable = None

    def stage(self, plan: Stage) -> None:
        if self.open is not None:
            raise StoreError("Stage inside an open batch (a nested BEGIN)")
        if plan.truncate_from is not None:
            if plan.truncate_from <= self.commit_seq:
                raise StoreError(
                    f"truncating from {plan.truncate_from}, at or below commit_seq "
                    f"{self.commit_seq}"
                )
            for seq in [seq for seq in self.log if seq >= plan.truncate_from]:
                del self.log[seq]
        for entry in plan.stage:
            if entry.seq in self.log:
                raise StoreError(f"staging seq {entry.seq} over an existing entry")
            self.log[entry.seq] = entry
        for entry in plan.apply:
            if self.log.get(entry.seq) != entry:
                raise StoreError(f"applying seq {entry.seq}, which is not the logged entry")
            self._apply(entry)
        self.epoch = max(self.epoch, plan.epoch)  # (storage.stage_entries: never back)
        self.commit_seq = plan.commit_seq
        self.sync()

    def prune(self, below_seq: int) -> None:
        """`storage.prune_log`: forget committed entries below `below_seq`."""
        if self.open is not None:
            raise StoreError("PruneLog inside an open batch (its rollback would undo it)")
        if below_seq > self.commit_seq:  # (the last committed entry is kept)
            raise StoreError(f"pruning below {below_seq}: staged entries above {self.commit_seq}")
        for seq in [seq for seq in self.log if seq < below_seq]:
            del self.log[seq]
        self.sync()

    def install(self, data: SnapshotData, epoch: int) -> None:
        """`storage.install_snapshot`: the whole database replaced, the highest epoch kept."""
        if self.open is not None:
            raise StoreError("InstallSnapshot inside an open batch")
        self.epoch = max(self.epoch, data.epoch, epoch)  # (never back)
        self.commit_seq = data.commit_seq
        self.log = dict(data.log)
        self.rows = {name: dict(rows) for name, rows in data.rows.items()}
        self.check_all()
        self.sync()

    # ---------------------------------------------------------------- rows

    def _key(self, change: Upsert) -> int | str:
        key = change.row[self.tables[change.table]]
        assert isinstance(key, int | str), change
        return key

    def _apply(self, entry: Entry) -> None:
        once = self.state.once
        for change in entry.changes:
            if not isinstance(change, Upsert):
                raise StoreError(f"unexpected change {change!r}")
            key = self._key(change)
            rows = self.rows[change.table]
            if change.table in once and key in rows:
                raise StoreError(f"idempotency key {key} applied twice (seq {entry.seq})")
            rows[key] = dict(change.row)
        self.state.check(self.rows, entry.changes)

    def check_all(self) -> None:
        """Every invariant of the machine over every row (after a snapshot or a loss)."""
        changes = [
            Upsert(table=table, row=row)
            for table, rows in self.rows.items()
            for row in rows.values()
        ]
        self.state.check(self.rows, changes)

    def stock(self, book_id: int) -> int:
        return as_int(self.rows["books"][book_id]["stock"])
