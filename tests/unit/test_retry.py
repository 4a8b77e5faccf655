"""The write-retry rule (`retry.write_retry`), as a table: what each failure of a keyed
write means, and whether it is made again."""

from __future__ import annotations

import pytest

from bazar.retry import Failed, Retry, write_retry


@pytest.mark.parametrize(
    ("failed", "definite", "failover", "expected"),
    [
        # Not the primary, no lease: definitely not done; made again (on the new primary).
        ("refused", True, False, Retry(again=True, uncertain=False)),
        ("refused", True, True, Retry(again=True, uncertain=False)),
        # A rolled-back batch may be staged on a backup that a new primary commits: the key
        # makes a second attempt safe.
        ("abandoned", False, False, Retry(again=True, uncertain=True)),
        # Connection refused: it never arrived.
        ("lost", True, False, Retry(again=True, uncertain=False)),
        # No answer: the outcome is unknown; made again only once a failover has replaced
        # the primary (which has it, or will refuse it), else the caller hears it.
        ("lost", False, False, Retry(again=False, uncertain=True)),
        ("lost", False, True, Retry(again=True, uncertain=True)),
    ],
)
def test_write_retry_rule(failed: Failed, definite: bool, failover: bool, expected: Retry) -> None:
    assert write_retry(failed, definite=definite, failover=failover) == expected


def test_a_refusal_is_always_definite_and_an_abandoned_batch_never() -> None:
    with pytest.raises(AssertionError):
        write_retry("refused", definite=False, failover=False)
    with pytest.raises(AssertionError):
        write_retry("abandoned", definite=True, failover=False)
