"""`batcher.Batcher`, the group commit across the order -> catalog hop: calls made while
one is out travel together in the next, each caller gets its own result or error, and no
caller is ever stranded (a failed call, a bug in the reply, a timeout)."""

from __future__ import annotations

import asyncio

import pytest

from bazar.batcher import Batcher, ToPrimary, keyed_items_per_call
from bazar.config import Limits
from bazar.errors import NotPrimary, Refused, Unavailable
from bazar.outcomes import outcome_of, settle
from bazar.transport import TransportError
from bazar.wire import ErrorDetail, Sell, SellBatch, encode


class FakeCatalog:
    """Answers each batch when the test releases it; records the batches it saw."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail_with: Exception | None = None

    async def send(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(items)
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [Refused("no") if item < 0 else item * 10 for item in items]


async def idle() -> None:
    """Let every ready task run (a call starts its sender a few loop turns later)."""
    for _ in range(5):
        await asyncio.sleep(0)


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_calls_made_while_one_is_out_go_together_in_the_next() -> None:
    async def scenario() -> None:
        catalog = FakeCatalog()
        batcher: Batcher[int, int] = Batcher(catalog.send, items_max=3)
        first = asyncio.ensure_future(batcher.call(1, 1000))
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(batcher.call(n, 1000)) for n in (2, 3, 4, 5, -6)]
        await asyncio.sleep(0)
        catalog.release.set()
        assert await first == 10
        assert [await call for call in rest[:4]] == [20, 30, 40, 50]
        with pytest.raises(Refused):
            await rest[4]
        assert catalog.batches == [[1], [2, 3, 4], [5, -6]]  # at most items_max per call

    run(scenario())


def test_pipelined_up_to_depth_calls_are_out_at_once_and_the_rest_wait_together() -> None:
    async def scenario() -> None:
        catalog = FakeCatalog()
        batcher: Batcher[int, int] = Batcher(catalog.send, items_max=8, depth=2)
        first = asyncio.ensure_future(batcher.call(1, 1000))
        await idle()
        second = asyncio.ensure_future(batcher.call(2, 1000))
        await idle()
        assert catalog.batches == [[1], [2]]  # the second did not wait for the first
        rest = [asyncio.ensure_future(batcher.call(n, 1000)) for n in (3, 4, 5)]
        await idle()
        assert catalog.batches == [[1], [2]]  # both slots busy: these queue
        catalog.release.set()
        assert [await call for call in (first, second, *rest)] == [10, 20, 30, 40, 50]
        assert catalog.batches == [[1], [2], [3, 4, 5]]  # together, in the first slot free

    run(scenario())


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (NotPrimary("moved"), NotPrimary),
        (TransportError("reset", definite=False), TransportError),
        (ValueError("a bug"), TransportError),  # never strands its callers
    ],
)
def test_a_failed_call_fails_each_of_its_items(error: Exception, expected: type) -> None:
    async def scenario() -> None:
        catalog = FakeCatalog()
        catalog.fail_with = error
        batcher: Batcher[int, int] = Batcher(catalog.send, items_max=8)
        calls = [asyncio.ensure_future(batcher.call(n, 1000)) for n in (1, 2)]
        await asyncio.sleep(0)
        catalog.release.set()
        for call in calls:
            with pytest.raises(expected):
                await call
        catalog.fail_with = None  # the batcher still works afterwards
        assert await batcher.call(3, 1000) == 30

    run(scenario())


def test_a_reply_of_the_wrong_size_is_an_unknown_outcome() -> None:
    async def short(items: list[int]) -> list[int | Exception]:
        answered: list[int | Exception] = list(items[:-1])
        return answered

    async def scenario() -> None:
        batcher: Batcher[int, int] = Batcher(short, items_max=8)
        calls = [asyncio.ensure_future(batcher.call(n, 1000)) for n in (1, 2)]
        for call in calls:
            with pytest.raises(TransportError) as raised:
                await call
            assert not raised.value.definite

    run(scenario())


def test_a_caller_that_waited_too_long_gets_an_unknown_outcome() -> None:
    async def scenario() -> None:
        catalog = FakeCatalog()  # never released
        batcher: Batcher[int, int] = Batcher(catalog.send, items_max=8)
        with pytest.raises(TransportError) as raised:
            await batcher.call(1, 20)
        assert not raised.value.definite  # it may still be sent and done

    run(scenario())


def test_a_batch_of_the_largest_keys_fits_one_request_body() -> None:
    limits = Limits()
    per_call = keyed_items_per_call(limits, overhead_bytes=96)
    assert 1 <= per_call <= limits.batch_commands_max
    worst_key = '"\\' * (limits.idempotency_key_chars_max // 2) + "k"  # escapes double in JSON
    assert len(worst_key) <= limits.idempotency_key_chars_max
    sells = [Sell(idempotency_key=worst_key, book_id=2**62, quantity=1000)] * per_call
    assert len(encode(SellBatch(sells=sells))) <= limits.request_bytes_max


def test_an_item_is_its_result_or_the_error_it_names() -> None:
    assert outcome_of(7, None) == 7
    error = outcome_of(None, ErrorDetail(code="not_primary", message="moved"))
    assert isinstance(error, NotPrimary)
    assert error.message == "moved"
    assert isinstance(outcome_of(None, ErrorDetail(code="no-such-code", message="?")), Unavailable)
    unknown = outcome_of(None, None)
    assert isinstance(unknown, TransportError)
    assert not unknown.definite


def test_a_new_primary_gets_its_own_batcher() -> None:
    async def scenario() -> None:
        stuck = asyncio.Event()  # the old primary never answers
        seen: list[tuple[str, list[int]]] = []

        async def send(url: str, items: list[int]) -> list[int | Exception]:
            seen.append((url, items))
            if url == "old":
                await stuck.wait()
            return [item * 10 for item in items]

        to_primary: ToPrimary[int, int] = ToPrimary(send, Limits())
        held = asyncio.ensure_future(to_primary.call("old", 1, 1000))
        await asyncio.sleep(0)
        assert await to_primary.call("new", 2, 1000) == 20  # not queued behind the old call
        assert seen == [("old", [1]), ("new", [2])]
        held.cancel()

    run(scenario())


def test_settle_turns_an_items_refusal_into_its_detail() -> None:
    async def refused() -> int:
        raise NotPrimary("moved")

    async def done() -> int:
        return 3

    async def scenario() -> None:
        assert await settle(done()) == (3, None)
        assert await settle(refused()) == (None, ErrorDetail(code="not_primary", message="moved"))

    run(scenario())
