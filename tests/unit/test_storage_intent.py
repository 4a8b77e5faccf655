"""The primary's intent log on real SQLite files (`storage.IntentLog`): the batch's COMMIT
skips its fsync only when the intent holds its entry, and after an OS crash that lost such a
COMMIT, start-up puts the entry back as staged (what a backup holding it would have).

An OS crash cannot be caused here; the state it leaves is: the intent on disk, the COMMIT's
WAL frames not. A batch rolled back after its intent was written is exactly that state for
the main database."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from bazar.catalog import machine as catalog
from bazar.catalog import reads as catalog_reads
from bazar.catalog import seed as catalog_seed
from bazar.replication import storage
from bazar.replication.storage import (
    Store,
    begin_batch,
    commit_batch,
    rollback_batch,
    stage_entries,
    write_intent,
)
from bazar.wire import Entry, Sell


def open_store(path: Path) -> Store:
    store = Store(path / "db", catalog.SCHEMA, catalog.TABLES)
    store.recover()  # (as the driver's `boot` does)
    store.write_blocking(partial(catalog_seed.seed, books=catalog_seed.load_seed(None)))
    return store


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "catalog-1"


def begin(store: Store, key: str, seq: int, epoch: int = 1) -> Entry:
    entry, _ = store.write_blocking(
        partial(
            begin_batch,
            machine=catalog.CatalogMachine(),
            commands=[Sell(idempotency_key=key, book_id=1, quantity=1)],
            version=(epoch, seq),
        )
    )
    assert entry is not None
    return entry


def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    synced: list[Path] = []
    real = storage.sync_file

    def counting(path: Path) -> None:
        synced.append(path)
        real(path)

    monkeypatch.setattr(storage, "sync_file", counting)
    return synced


def test_a_commit_covered_by_its_intent_skips_the_fsync_and_others_sync(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = fsyncs(monkeypatch)
    store = open_store(path)
    synced.clear()  # (start-up syncs the WAL: `recover_intent`)
    try:
        entry = begin(store, "a", seq=1)
        store.write_blocking(partial(write_intent, intent=store.intent, entry=entry))
        store.write_blocking(partial(commit_batch, intent=store.intent, entry=entry))
        assert synced == []
        entry = begin(store, "b", seq=2)  # its intent was never written
        store.write_blocking(partial(commit_batch, intent=store.intent, entry=entry))
        assert synced == [path / "db-wal"]
        for seq in range(3, 3 + storage.INTENT_SYNC_EVERY):  # and one in every N regardless
            entry = begin(store, f"k{seq}", seq=seq)
            store.write_blocking(partial(write_intent, intent=store.intent, entry=entry))
            store.write_blocking(partial(commit_batch, intent=store.intent, entry=entry))
        assert len(synced) == 2
    finally:
        store.close()


def test_a_lost_commit_comes_back_staged_from_the_intent(path: Path) -> None:
    store = open_store(path)
    committed = begin(store, "a", seq=1)
    store.write_blocking(partial(write_intent, intent=store.intent, entry=committed))
    store.write_blocking(partial(commit_batch, intent=store.intent, entry=committed))
    lost = begin(store, "b", seq=2)
    store.write_blocking(partial(write_intent, intent=store.intent, entry=lost))
    store.write_blocking(rollback_batch)  # the COMMIT that never reached the disk
    store.close()

    store = open_store(path)
    try:
        meta = store.load_meta()
        assert meta.commit_seq == 1
        assert meta.staged == (lost,)
        book = catalog_reads.read_book(store.reader, 1)
        assert book is not None
        assert book["stock"] == 5  # "a" sold, "b" staged only
        assert store.intent.entries_after(0) == []  # now in the log; the intent is spent
    finally:
        store.close()
    store = open_store(path)  # a second start-up changes nothing
    try:
        assert store.load_meta().staged == (lost,)
    finally:
        store.close()


def test_an_intent_older_than_a_staged_entry_is_dropped(path: Path) -> None:
    """A primary's abandoned batch, then (as a backup) an entry of the next primary staged at
    the same seq: the staging synced everything before it, the intent is stale."""
    store = open_store(path)
    abandoned = begin(store, "a", seq=1, epoch=1)
    store.write_blocking(partial(write_intent, intent=store.intent, entry=abandoned))
    store.write_blocking(rollback_batch)
    newer = Entry(epoch=2, seq=1, changes=abandoned.changes)
    store.write_blocking(
        partial(
            stage_entries,
            tables=store.tables,
            epoch=2,
            truncate_from=None,
            entries=[newer],
            apply=[],
            commit_seq=0,
        )
    )
    store.close()

    store = open_store(path)
    try:
        assert store.load_meta().staged == (newer,)
        assert store.intent.entries_after(0) == []
    finally:
        store.close()
