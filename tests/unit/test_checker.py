"""The linearizability checker (docs/testing.md §3): the classic self-tests, the restock
extension, and agreement with a brute-force search on thousands of small histories."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest

from bazar.testing import checker
from bazar.testing.history import Kind, Operation, Outcome, Result


def op(
    kind: Kind,
    argument: int | None,
    call_s: float,
    return_s: float | None,
    outcome: Outcome | None,
    result: Result = None,
    book_id: int = 1,
) -> Operation:
    return Operation(
        index=0,
        process=0,
        kind=kind,
        book_id=book_id,
        argument=argument,
        invoke_s=call_s,
        complete_s=return_s,
        outcome=outcome,
        result=result,
    )


def buy_ok(call_s: float, return_s: float, quantity: int = 1, book_id: int = 1) -> Operation:
    return op("buy", quantity, call_s, return_s, "ok", "order-id", book_id)


def buy_out(call_s: float, return_s: float, quantity: int = 1) -> Operation:
    return op("buy", quantity, call_s, return_s, "fail", "out_of_stock")


def buy_unknown(call_s: float, quantity: int = 1) -> Operation:
    return op("buy", quantity, call_s, None, "info")


def read(call_s: float, return_s: float, stock: int, book_id: int = 1) -> Operation:
    return op("read", None, call_s, return_s, "ok", stock, book_id)


def restock(call_s: float, return_s: float, delta: int, stock: int) -> Operation:
    return op("restock", delta, call_s, return_s, "ok", stock)


def linearizable(operations: Sequence[Operation], initial_stock: int) -> bool:
    return checker.check_book(operations, initial_stock)


# ---------------------------------------------------------------- appendix A self-tests


def test_checker_accepts_a_valid_concurrent_history() -> None:
    # Two overlapping reads may see the overlapping buy in either order...
    assert linearizable([buy_ok(0, 10), read(1, 3, 2), read(2, 4, 3)], 3)
    # ... but two reads in sequence may not see it and then un-see it.
    assert not linearizable([buy_ok(0, 10), read(1, 3, 2), read(4, 5, 3)], 3)
    history = [buy_ok(0, 10), read(1, 3, 3), read(4, 6, 2), buy_ok(5, 12), read(13, 14, 1)]
    assert linearizable(history, 3)


def test_checker_rejects_a_read_of_the_old_stock_after_a_completed_buy() -> None:
    assert not linearizable([buy_ok(0, 1), read(2, 3, 5)], 5)
    assert linearizable([buy_ok(0, 1), read(2, 3, 4)], 5)


def test_checker_rejects_two_ok_buys_of_the_last_unit() -> None:
    assert not linearizable([buy_ok(0, 5), buy_ok(1, 6)], 1)
    assert linearizable([buy_ok(0, 5), buy_out(1, 6)], 1)


def test_checker_accepts_a_timed_out_buy_whether_it_applied_or_not() -> None:
    applied = [buy_unknown(0), read(5, 6, 1)]
    not_applied = [buy_unknown(0), read(5, 6, 2)]
    assert linearizable(applied, 2)
    assert linearizable(not_applied, 2)
    assert not linearizable([buy_unknown(0), read(5, 6, 0)], 2)


# ---------------------------------------------------------------- the rest of the model


def test_checker_rejects_out_of_stock_when_stock_sufficed() -> None:
    assert not linearizable([buy_out(0, 1, quantity=2)], 2)
    assert linearizable([buy_out(0, 1, quantity=3)], 2)


def test_checker_takes_a_timed_out_buy_effect_at_most_once() -> None:
    assert not linearizable([buy_unknown(0, quantity=1), read(5, 6, 0)], 2)


def test_checker_checks_the_stock_a_restock_returns() -> None:
    assert linearizable([restock(0, 1, 5, 7), read(2, 3, 7)], 2)
    assert not linearizable([restock(0, 1, 5, 6)], 2)
    assert not linearizable([restock(0, 1, 5, 7), read(2, 3, 2)], 2)


def test_checker_orders_concurrent_restock_and_buy_by_the_returned_stock() -> None:
    # The restock returned 6 = 2 + 5 - 1: the buy was linearized before it.
    assert linearizable([buy_ok(0, 10), restock(1, 9, 5, 6)], 2)
    assert linearizable([buy_ok(0, 10), restock(1, 9, 5, 7)], 2)
    assert not linearizable([buy_ok(0, 1), restock(2, 9, 5, 7)], 2)


def test_checker_knows_a_refused_reduction_left_the_stock_alone() -> None:
    refused = op("restock", -3, 0, 1, "fail", "out_of_stock")
    assert linearizable([refused, read(2, 3, 2)], 2)
    assert not linearizable([refused], 3)


def test_checker_ignores_failed_reads_and_other_definite_failures() -> None:
    history = [
        op("read", None, 0, 1, "fail", "unavailable"),
        op("read", None, 0, 1, "info"),
        op("buy", 1, 0, 1, "fail", "not_found"),
        read(2, 3, 4),
    ]
    assert linearizable(history, 4)


def test_checker_treats_an_open_operation_as_unknown() -> None:
    still_open = op("buy", 1, 0, None, None)
    assert linearizable([still_open, read(5, 6, 3)], 4)
    assert linearizable([still_open, read(5, 6, 4)], 4)


def test_check_partitions_by_book_and_names_the_failed_ones() -> None:
    history = [
        buy_ok(0, 1, book_id=1),
        read(2, 3, 0, book_id=1),
        buy_ok(0, 1, book_id=2),
        read(2, 3, 5, book_id=2),
    ]
    verdict = checker.check(history, {1: 1, 2: 5})
    assert verdict == checker.Verdict(linearizable=False, books_failed=(2,))
    assert "buy(1)" in checker.describe(history, 2)


def test_check_refuses_a_book_without_initial_stock() -> None:
    with pytest.raises(ValueError, match="no initial stock"):
        checker.check([read(0, 1, 1, book_id=9)], {1: 1})


def test_check_accepts_the_empty_history() -> None:
    assert checker.check([], {}) == checker.Verdict(linearizable=True, books_failed=())


# ---------------------------------------------------------------- against brute force


def brute_force(operations: Sequence[Operation], initial_stock: int) -> bool:
    """Try every order that respects real time, and both fates of every unknown operation."""
    pending: list[tuple[Operation, float]] = []
    for operation in operations:
        outcome = operation.outcome or "info"
        if operation.kind == "read" and outcome != "ok":
            continue
        if outcome == "fail" and operation.result != "out_of_stock":
            continue
        unknown = outcome == "info"
        assert unknown or operation.complete_s is not None
        end = math.inf if unknown or operation.complete_s is None else operation.complete_s
        pending.append((operation, end))

    def outcomes(stock: int, operation: Operation) -> list[int]:
        outcome = operation.outcome or "info"
        if operation.kind == "read":
            return [stock] if operation.result == stock else []
        assert operation.argument is not None
        sign = -1 if operation.kind == "buy" else 1
        after = stock + sign * operation.argument
        if outcome == "info":
            return [stock, after] if after >= 0 else [stock]
        if outcome == "fail":
            return [stock] if after < 0 else []
        if after < 0:
            return []
        if operation.kind == "restock" and operation.result != after:
            return []
        return [after]

    def search(remaining: list[tuple[Operation, float]], stock: int) -> bool:
        if not remaining:
            return True
        for position, (candidate, _) in enumerate(remaining):
            others = remaining[:position] + remaining[position + 1 :]
            if any(end < candidate.invoke_s for _, end in others):
                continue  # another operation finished before this one started
            if any(search(others, after) for after in outcomes(stock, candidate)):
                return True
        return False

    return search(pending, initial_stock)


def random_history(rng: random.Random) -> list[Operation]:
    history = []
    for _ in range(rng.randint(1, 6)):
        kind: Kind = rng.choice(["read", "buy", "buy", "restock"])
        call_s = float(rng.randint(0, 8))
        return_s = call_s + rng.randint(0, 4)
        outcome: Outcome = rng.choice(["ok", "ok", "ok", "fail", "info"])
        if kind == "read":
            history.append(op(kind, None, call_s, return_s, outcome, rng.randint(0, 4)))
            continue
        argument = rng.randint(1, 2) if kind == "buy" else rng.randint(-2, 3)
        result: Result = None
        if outcome == "fail":
            result = rng.choice(["out_of_stock", "out_of_stock", "not_found"])
        elif outcome == "ok":
            result = "order-id" if kind == "buy" else rng.randint(0, 5)
        if outcome == "info":
            history.append(op(kind, argument, call_s, rng.choice([None, return_s]), outcome))
        else:
            history.append(op(kind, argument, call_s, return_s, outcome, result))
    return history


def test_checker_agrees_with_brute_force_on_random_small_histories() -> None:
    rng = random.Random(20261125)
    verdicts = {True: 0, False: 0}
    for _ in range(3000):
        history = random_history(rng)
        initial_stock = rng.randint(0, 3)
        expected = brute_force(history, initial_stock)
        assert linearizable(history, initial_stock) == expected, (initial_stock, history)
        verdicts[expected] += 1
    # Both verdicts are common, so the agreement is not vacuous.
    assert min(verdicts.values()) >= 300, verdicts
