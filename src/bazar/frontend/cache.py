"""The front end's read cache, without I/O: bounded LRU of encoded responses, kept fresh by
versioned invalidation pushed by the catalog primary.

Keys are logical resources (`book:3`, `topic:<casefolded topic>`, `list`), never a replica.
Every entry remembers the books it shows. The rule that closes the late-fill race
(docs/design.md, "Cache"):
- `invalidate(books, version)` records `invalidated[book] = max(..., version)` and drops every
  entry that shows one of those books;
- `fill(key, body, version, books)` stores only if `version >= invalidated[book]` for every
  book shown. A read that started before a write and returns after its invalidation carries
  an older version and is refused, whatever the order of the messages.
`invalidated` is kept for every book ever written (one version per book: the catalog is small).
A TTL is the safety net against bugs; it never serves as the freshness mechanism.

Readiness: a new catalog primary may have a write open (invalidated at a front end that died
since, or not yet sent). Until that primary's lease request has told us its open write
(`heard_primary`), `ready` is False and no fill is stored; a read takes its `ticket` as it
starts, so a read that started before may carry a value that write replaces and is never
stored.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from bazar.wire import ReplicaStatus, Version, View

NO_VERSION: Version = (0, 0)


@dataclass(frozen=True, slots=True)
class Cached:
    """One stored answer (not a log `wire.Entry`)."""

    body: bytes
    books: tuple[int, ...]
    stored_ms: int


@dataclass(slots=True)
class Cache:
    entries_max: int
    ttl_ms: int
    entries: OrderedDict[str, Cached] = field(default_factory=OrderedDict)
    invalidated: dict[int, Version] = field(default_factory=dict)
    shown_in: dict[int, set[str]] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0
    invalidations: int = 0
    rejected_fills: int = 0
    expirations: int = 0
    evictions: int = 0
    ready: bool = False  # the catalog primary has told us its open write (module docstring)
    unsafe_fill_stale: bool = False
    """A deliberate bug, for the simulator's controls only: fill without the version rule."""

    def __post_init__(self) -> None:
        assert self.entries_max >= 1
        assert self.ttl_ms >= 1

    def primary_changed(self) -> None:
        """A view named a new catalog primary: not ready until it has told us its write."""
        self.ready = False

    def heard_primary(self, status: ReplicaStatus, view: View) -> None:
        """A granted lease request of the catalog's primary `view.primary` (`status`): apply
        the write it has between its invalidation and its COMMIT (perhaps sent to a front end
        that died since) before anything fills; once it acts as primary of the view, fills
        may be stored."""
        assert view.tier == "catalog"
        if status.tier != "catalog" or status.name != view.primary:
            return
        if status.invalidating is not None:
            self.invalidate_once(status.invalidating.books, status.invalidating.version)
        if status.epoch == view.epoch and status.role == "primary":
            self.ready = True

    def ticket(self) -> bool:
        """Taken as a read starts, given back to `fill`: was the cache ready then?"""
        return self.ready

    def get(self, key: str, now_ms: int) -> bytes | None:
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if now_ms - entry.stored_ms >= self.ttl_ms:
            self._drop(key)
            self.expirations += 1
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return entry.body

    def fill(
        self,
        key: str,
        body: bytes,
        version: Version,
        books: tuple[int, ...],
        now_ms: int,
        ticket: bool = True,
    ) -> bool:
        """Store a replica's answer unless a newer write to one of its books was invalidated,
        or the cache was not ready when the read started (`ticket`)."""
        if not ticket:
            return False
        for book in books:
            if version < self.invalidated.get(book, NO_VERSION) and not self.unsafe_fill_stale:
                self.rejected_fills += 1
                return False
        if key in self.entries:
            self._drop(key)
        self.entries[key] = Cached(body=body, books=books, stored_ms=now_ms)
        for book in books:
            self.shown_in.setdefault(book, set()).add(key)
        while len(self.entries) > self.entries_max:
            oldest = next(iter(self.entries))
            self._drop(oldest)
            self.evictions += 1
        assert len(self.entries) <= self.entries_max
        return True

    def invalidate(self, books: tuple[int, ...], version: Version) -> int:
        """A write at `version` changed `books`: forget what shows them. Returns entries dropped."""
        dropped = 0
        for book in books:
            if version > self.invalidated.get(book, NO_VERSION):
                self.invalidated[book] = version
            for key in list(self.shown_in.get(book, ())):
                self._drop(key)
                dropped += 1
        self.invalidations += 1
        return dropped

    def invalidate_once(self, books: tuple[int, ...], version: Version) -> int:
        """`invalidate`, unless this version of every book is already recorded: the catalog
        primary sends it directly and repeats it in its lease requests until its COMMIT, and every
        fill accepted since it was recorded is at least as new."""
        if any(version > self.invalidated.get(book, NO_VERSION) for book in books):
            return self.invalidate(books, version)
        return 0

    def _drop(self, key: str) -> None:
        entry = self.entries.pop(key)
        for book in entry.books:
            keys = self.shown_in.get(book)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.shown_in[book]


def topic_key(topic: str) -> str:
    """Topics match case-insensitively, so case variants share one entry."""
    return "topic:" + topic.casefold()


def book_key(book_id: int) -> str:
    return f"book:{book_id}"


LIST_KEY = "list"
