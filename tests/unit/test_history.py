"""The operation log: invoke, then exactly one completion, on one monotonic clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bazar.testing.history import History


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        self.now_s += 1.0
        return self.now_s


def test_history_records_invoke_and_completion_times_from_its_clock() -> None:
    history = History(clock=FakeClock())
    buy = history.invoke(process=1, kind="buy", book_id=3, argument=2)
    read = history.invoke(process=2, kind="read", book_id=3)
    history.ok(read, 7)
    history.info(buy)
    first, second = history.operations
    assert (first.invoke_s, first.complete_s, first.outcome, first.result) == (
        1.0,
        4.0,
        "info",
        None,
    )
    assert (second.invoke_s, second.complete_s, second.outcome, second.result) == (
        2.0,
        3.0,
        "ok",
        7,
    )
    assert [operation.index for operation in history] == [0, 1]
    assert len(history) == 2


def test_history_refuses_a_second_completion() -> None:
    history = History(clock=FakeClock())
    index = history.invoke(process=1, kind="restock", book_id=1, argument=5)
    history.fail(index, "out_of_stock")
    with pytest.raises(AssertionError, match="completed twice"):
        history.ok(index, 9)


def test_history_keeps_open_operations_open() -> None:
    history = History(clock=FakeClock())
    history.invoke(process=1, kind="buy", book_id=1, argument=1)
    (operation,) = history.operations
    assert operation.open
    assert operation.complete_s is None


def test_history_dumps_one_json_object_per_operation(tmp_path: Path) -> None:
    history = History(clock=FakeClock())
    history.ok(history.invoke(process=1, kind="read", book_id=2), 4)
    history.invoke(process=2, kind="buy", book_id=2, argument=1)
    path = tmp_path / "history.jsonl"
    history.dump_jsonl(path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["read", "buy"]
    assert lines[0]["result"] == 4
    assert lines[1]["outcome"] is None
