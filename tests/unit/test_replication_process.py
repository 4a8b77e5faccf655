"""A peer's Append is checked at the edge (`replication/process.check_append`): what the core
would assert on is refused with a 422 before it reaches it."""

from __future__ import annotations

import pytest

from bazar.errors import InvalidRequest
from bazar.replication.process import check_append
from bazar.wire import Append, Entry, Upsert

TABLES = {"books": "id"}


def entry(epoch: int, seq: int, table: str = "books") -> Entry:
    return Entry(epoch=epoch, seq=seq, changes=[Upsert(table=table, row={"id": 1})])


def append(entries: list[Entry], *, epoch: int = 2, prev: tuple[int, int] = (1, 4)) -> Append:
    return Append(
        epoch=epoch,
        primary="r1",
        prev_epoch=prev[0],
        prev_seq=prev[1],
        entries=entries,
        commit_seq=4,
    )


def test_an_append_that_follows_its_previous_entry_passes() -> None:
    check_append(append([entry(1, 5), entry(2, 6)]), TABLES)
    check_append(append([], prev=(0, 0)), TABLES)  # a commit notice


@pytest.mark.parametrize(
    "message",
    [
        append([entry(2, 6)]),  # a hole after prev_seq
        append([entry(2, 5), entry(2, 5)]),  # the same seq twice
        append([entry(2, 5), entry(1, 6)]),  # an epoch going back
        append([entry(3, 5)]),  # an entry from a later epoch than the message
        append([entry(0, 5)], prev=(0, 4)),  # epoch 0 is no one's
        append([entry(2, 5, table="orders")]),  # a table this tier does not have
        append([entry(1, 5)], prev=(3, 4)),  # the previous entry from a later epoch
        append([], epoch=0),
        append([], prev=(1, -1)),
    ],
)
def test_a_malformed_append_is_refused(message: Append) -> None:
    with pytest.raises(InvalidRequest):
        check_append(message, TABLES)
