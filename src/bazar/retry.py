"""The write-retry policy: when a write to a tier's primary that failed is made again.

Why one place: the front end (writes to either tier), the order primary (sales at the
catalog) and the simulator all follow the same rule, and it is what makes a failover cost a
retry instead of an error without ever applying a write twice. The rule itself,
`write_retry`, is pure; `write_to_primary` runs it over asyncio attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from bazar.errors import Abandoned, NotPrimary, Refused
from bazar.transport import TransportError

T = TypeVar("T")


async def unless_changed(call: Awaitable[T], changed: asyncio.Event, what: str) -> T:
    """Await `call`, but give it up as soon as `changed` is set (a failover replaced the
    primary it was sent to): its outcome is then unknown.

    Raises: TransportError (indefinite) when given up, and whatever `call` raises.
    """
    task = asyncio.ensure_future(call)
    waiter = asyncio.ensure_future(changed.wait())
    try:
        await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not task.done():
        task.cancel()
        raise TransportError(f"{what}: the primary changed during the call", definite=False)
    return task.result()


class WriteFailed(Exception):
    """A write to a primary that `write_to_primary` gave up on: `error` is the last
    failure; `uncertain` whether any attempt may have taken effect."""

    def __init__(self, error: Exception, *, uncertain: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.uncertain = uncertain


Failed = Literal["refused", "abandoned", "lost"]
"""How an attempt at a keyed write failed: `refused` (not the primary, no lease: definitely
not done), `abandoned` (its batch rolled back: perhaps staged on a backup that a new primary
commits), `lost` (no answer: a connection error, a timeout, or given up for a failover)."""


@dataclass(frozen=True, slots=True)
class Retry:
    again: bool
    uncertain: bool
    """This attempt may have taken effect."""


def write_retry(failed: Failed, *, definite: bool, failover: bool) -> Retry:
    """The write-retry rule, for every keyed write (its key makes a second attempt safe: the
    primary answers a key it has seen with the stored result). A refusal is retried, on the
    new primary once a failover has named one; so is an abandoned attempt; a lost one only
    when it definitely did not arrive (connection refused) or when a failover replaced its
    primary (the new primary has it, or will refuse it). Any other error is the answer.
    Used by `write_to_primary` and by the simulator alike; the deadline is the caller's."""
    if failed == "refused":
        assert definite
        return Retry(again=True, uncertain=False)
    if failed == "abandoned":
        assert not definite
        return Retry(again=True, uncertain=True)
    return Retry(again=definite or failover, uncertain=not definite)


async def write_to_primary(
    attempt: Callable[[asyncio.Event, int], Awaitable[T]],
    failover: Callable[[], asyncio.Event],
    *,
    deadline_s: float,
    retry_ms: int,
    before: Callable[[], Awaitable[object]] | None = None,
) -> tuple[T, bool]:
    """A keyed write to a tier's primary, across a failover. `attempt(failover event,
    timeout_ms)` makes one call (given up when the event is set); `write_retry` says whether
    a failed one is made again, on the new primary once a failover has named one, until
    `deadline_s` (on `time.monotonic`); `before()` is awaited ahead of each attempt (a
    switchover's hold). Returns the reply and whether an earlier attempt may have taken
    effect.

    Raises: WriteFailed.
    """
    uncertain = False
    while True:
        if before is not None:
            await before()
        event = failover()
        timeout_ms = max(1, int((deadline_s - time.monotonic()) * 1000))
        try:
            return await attempt(event, timeout_ms), uncertain
        except (NotPrimary, Refused) as error:
            last: Exception = error
            retry = write_retry("refused", definite=True, failover=event.is_set())
        except Abandoned as error:
            last = error
            retry = write_retry("abandoned", definite=False, failover=event.is_set())
        except TransportError as error:
            last = error
            retry = write_retry("lost", definite=error.definite, failover=event.is_set())
        uncertain = uncertain or retry.uncertain
        if not retry.again:
            raise WriteFailed(last, uncertain=uncertain) from None
        if time.monotonic() >= deadline_s:
            raise WriteFailed(last, uncertain=uncertain)
        if not event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), retry_ms / 1000)
