"""Jepsen-shaped operation histories: every client operation is an `invoke`, later completed
by exactly one of `ok` (it happened, with this result), `fail` (it certainly did not happen)
or `info` (unknown: a timeout or a lost connection after the request was sent).

Rules:
1. Timestamps come from one monotonic clock (`time.monotonic` unless a test injects one), read
   just before the request is sent and just after its answer arrives, so that "a completed
   before b was invoked" in the history implies it in real time.
2. A read that times out is `fail` (a read changes nothing); a purchase or a restock that
   times out is `info` (it may have happened). `checker.py` judges the history; it never
   trusts server logs.
3. An operation still open when the history is judged counts as `info`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["buy", "read", "restock"]
Outcome = Literal["ok", "fail", "info"]
Result = int | str | None


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation on one book.

    `argument`: the quantity of a buy, the stock delta of a restock, None for a read.
    `result`: for `ok`, the stock a read or a restock returned (a buy's order id is kept for
    reports); for `fail`, the error code (`out_of_stock` is what the checker understands).
    """

    index: int
    process: int
    kind: Kind
    book_id: int
    argument: int | None
    invoke_s: float
    complete_s: float | None = None
    outcome: Outcome | None = None
    result: Result = None

    @property
    def open(self) -> bool:
        return self.outcome is None


class History:
    """An append-only log of operations; not thread-safe (one event loop records it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._operations: list[Operation] = []

    def invoke(self, process: int, kind: Kind, book_id: int, argument: int | None = None) -> int:
        """Record an invocation now; returns the index to complete it with."""
        if kind == "read":
            assert argument is None, "a read takes no argument"
        else:
            assert argument is not None, f"a {kind} needs an argument"
        index = len(self._operations)
        self._operations.append(
            Operation(
                index=index,
                process=process,
                kind=kind,
                book_id=book_id,
                argument=argument,
                invoke_s=self._clock(),
            )
        )
        return index

    def ok(self, index: int, result: Result = None) -> None:
        self._complete(index, "ok", result)

    def fail(self, index: int, result: Result = None) -> None:
        self._complete(index, "fail", result)

    def info(self, index: int, result: Result = None) -> None:
        self._complete(index, "info", result)

    def _complete(self, index: int, outcome: Outcome, result: Result) -> None:
        operation = self._operations[index]
        assert operation.open, f"operation {index} completed twice"
        now = self._clock()
        assert now >= operation.invoke_s, "the clock went backwards"
        self._operations[index] = dataclasses.replace(
            operation, complete_s=now, outcome=outcome, result=result
        )

    @property
    def operations(self) -> tuple[Operation, ...]:
        return tuple(self._operations)

    def __iter__(self) -> Iterator[Operation]:
        return iter(tuple(self._operations))

    def __len__(self) -> int:
        return len(self._operations)

    def dump_jsonl(self, path: Path) -> None:
        """One JSON object per operation, in invocation order (for failure reports)."""
        with path.open("w") as handle:
            for operation in self._operations:
                handle.write(json.dumps(dataclasses.asdict(operation)) + "\n")
