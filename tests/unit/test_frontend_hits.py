"""The cache-hit fast path recognises only canonical read paths; everything else (and any
`Cache-Control: no-cache` read) goes on to the full app, which validates and normalises."""

from __future__ import annotations

import pytest

from bazar.frontend.cache import LIST_KEY, book_key, topic_key
from bazar.frontend.hits import hit_key, wants_fresh


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/info/1", book_key(1)),
        ("/info/123456789012345678", book_key(123456789012345678)),
        ("/info", LIST_KEY),
        ("/search/distributed systems", topic_key("distributed systems")),
        ("/search/Distributed", topic_key("distributed")),
        # The full app decides these: other spellings, bad ids, long ids, other routes.
        ("/info/01", None),
        ("/info/0", None),
        ("/info/", None),
        ("/info/1/", None),
        ("/info/+1", None),
        ("/info/١", None),
        ("/info/1234567890123456789", None),
        ("/search/", None),
        ("/search/ ", None),
        ("/search/x/", None),
        ("/search/" + "x" * 201, None),
        ("/orders", None),
        ("/", None),
    ],
)
def test_hit_key(path: str, key: str | None) -> None:
    assert hit_key(path, topic_chars_max=200) == key


def test_no_cache_asks_for_a_fresh_read() -> None:
    assert wants_fresh([(b"cache-control", b"no-cache")])
    assert wants_fresh([(b"accept", b"*/*"), (b"cache-control", b"max-age=0, No-Cache")])
    assert not wants_fresh([(b"cache-control", b"max-age=60")])
    assert not wants_fresh([(b"pragma", b"no-cache")])
    assert not wants_fresh([])
