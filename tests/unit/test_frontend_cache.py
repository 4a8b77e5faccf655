"""The pure cache: the versioned fill rule, selective invalidation, LRU bound and TTL."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bazar.frontend.cache import LIST_KEY, Cache, book_key, topic_key
from bazar.wire import Invalidate, Member, ReplicaStatus, Role, View


def cache(entries_max: int = 100, ttl_ms: int = 60_000) -> Cache:
    return Cache(entries_max=entries_max, ttl_ms=ttl_ms)


def test_hit_returns_the_stored_bytes_and_counts() -> None:
    c = cache()
    assert c.get(book_key(1), 0) is None
    assert c.fill(book_key(1), b"one", (1, 1), (1,), 0)
    assert c.get(book_key(1), 1) == b"one"
    assert (c.hits, c.misses) == (1, 1)


def test_late_fill_older_than_the_invalidation_is_refused() -> None:
    c = cache()
    c.invalidate((3,), (1, 10))
    assert not c.fill(book_key(3), b"old", (1, 9), (3,), 0)
    assert c.rejected_fills == 1
    assert c.get(book_key(3), 0) is None
    assert c.fill(book_key(3), b"new", (1, 10), (3,), 0)


def test_a_newer_epoch_beats_a_higher_seq() -> None:
    c = cache()
    c.invalidate((3,), (1, 50))
    assert c.fill(book_key(3), b"x", (2, 1), (3,), 0)


def test_list_fill_needs_every_shown_book_fresh() -> None:
    c = cache()
    c.invalidate((2,), (1, 5))
    assert not c.fill(LIST_KEY, b"all", (1, 4), (1, 2, 3), 0)
    assert c.fill(LIST_KEY, b"all", (1, 5), (1, 2, 3), 0)


def test_invalidation_drops_only_entries_showing_the_book() -> None:
    c = cache()
    c.fill(book_key(1), b"1", (1, 1), (1,), 0)
    c.fill(book_key(3), b"3", (1, 1), (3,), 0)
    c.fill(topic_key("Undergraduate"), b"u", (1, 1), (3, 4), 0)
    c.fill(topic_key("distributed"), b"d", (1, 1), (1, 2), 0)
    assert c.invalidate((3,), (1, 2)) == 2
    assert set(c.entries) == {book_key(1), topic_key("distributed")}


def test_lru_bound_evicts_the_least_recently_used() -> None:
    c = cache(entries_max=2)
    c.fill("a", b"a", (1, 1), (1,), 0)
    c.fill("b", b"b", (1, 1), (2,), 0)
    assert c.get("a", 0) == b"a"
    c.fill("c", b"c", (1, 1), (3,), 0)
    assert set(c.entries) == {"a", "c"}
    assert c.evictions == 1
    assert 2 not in c.shown_in


def test_entries_expire_after_the_ttl() -> None:
    c = cache(ttl_ms=1000)
    c.fill("a", b"a", (1, 1), (1,), 0)
    assert c.get("a", 999) == b"a"
    assert c.get("a", 1000) is None
    assert c.expirations == 1
    assert not c.entries


def test_topic_keys_ignore_case() -> None:
    assert topic_key("Distributed Systems") == topic_key("distributed SYSTEMS")


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["fill", "invalidate", "get"]),
            st.integers(1, 4),
            st.integers(1, 6),
        ),
        max_size=60,
    )
)
def test_never_holds_an_entry_older_than_an_invalidation(
    steps: list[tuple[str, int, int]],
) -> None:
    c = cache(entries_max=3)
    versions: dict[str, tuple[int, int]] = {}
    for action, book, seq in steps:
        key = book_key(book)
        if action == "fill" and c.fill(key, b"x", (1, seq), (book,), 0):
            versions[key] = (1, seq)
        elif action == "invalidate":
            c.invalidate((book,), (1, seq))
        else:
            c.get(key, 0)
        for cached in c.entries:
            cached_book = int(cached.split(":")[1])
            assert versions[cached] >= c.invalidated.get(cached_book, (0, 0))
        assert len(c.entries) <= 3


def test_a_repeated_invalidation_counts_and_drops_once() -> None:
    c = cache()
    c.invalidate_once((1,), (1, 5))
    c.fill(book_key(1), b"new", (1, 5), (1,), 0)
    assert c.invalidate_once((1,), (1, 5)) == 0  # the heartbeat repeats it: keep the fill
    assert c.invalidations == 1
    assert c.get(book_key(1), 0) == b"new"


def primary_status(
    name: str, epoch: int, invalidating: Invalidate | None = None, role: Role = "primary"
) -> ReplicaStatus:
    return ReplicaStatus(
        name=name,
        tier="catalog",
        pid=1,
        incarnation="i",
        epoch=epoch,
        boot_epoch=epoch - 1,
        role=role,
        last_seq=0,
        last_epoch=0,
        commit_seq=0,
        invalidating=invalidating,
    )


VIEW = View(
    tier="catalog",
    epoch=2,
    primary="catalog-1",
    backups=("catalog-2",),
    members=(Member(name="catalog-1", url="u1"), Member(name="catalog-2", url="u2")),
)


def test_nothing_fills_until_the_primary_has_told_its_open_write() -> None:
    c = cache()
    assert not c.fill(book_key(1), b"v", (1, 1), (1,), 0, c.ticket())
    c.heard_primary(primary_status("catalog-2", 2), VIEW)  # not the view's primary
    assert not c.ticket()
    c.heard_primary(primary_status("catalog-1", 1), VIEW)  # not yet in the view's epoch
    assert not c.ticket()
    c.heard_primary(primary_status("catalog-1", 2), VIEW)
    assert c.fill(book_key(1), b"v", (1, 1), (1,), 0, c.ticket())


def test_the_open_write_a_new_primary_reports_is_applied_before_any_fill() -> None:
    c = cache()
    stale = c.ticket()  # a read that started before the primary spoke
    c.heard_primary(primary_status("catalog-1", 2, Invalidate(books=(3,), version=(2, 7))), VIEW)
    assert not c.fill(book_key(3), b"old", (1, 6), (3,), 0, c.ticket())  # older than (2, 7)
    assert not c.fill(book_key(3), b"x", (2, 7), (3,), 0, stale)  # started before: refused
    assert c.fill(book_key(3), b"new", (2, 7), (3,), 0, c.ticket())


def test_a_new_primary_makes_the_cache_wait_for_it_again() -> None:
    c = cache()
    c.heard_primary(primary_status("catalog-1", 2), VIEW)
    ticket = c.ticket()
    c.primary_changed()
    assert not c.ticket()
    assert c.fill(book_key(1), b"v", (2, 1), (1,), 0, ticket)  # (the version rule still holds)
