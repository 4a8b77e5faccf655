"""Linearizability of per-book stock: a Wing-Gong-Lowe checker (docs/testing.md §3), with
restocks in the model.

The model of one book is its stock, an int >= 0. Operations (from `history.py`):
- read, ok with stock s: legal iff the stock is s; failed reads changed nothing and are dropped;
- buy of q, ok: legal iff stock >= q, then stock -= q; failed with `out_of_stock`: legal iff
  stock < q, stock unchanged; any other definite failure changed nothing and is dropped;
- restock of d (PATCH stock_delta), ok with stock s: legal iff stock + d >= 0 and s == stock + d;
  failed with `out_of_stock`: legal iff stock + d < 0;
- a buy or restock whose outcome is unknown (`info`, or still open) may or may not have taken
  effect, at any point after its invocation (its return time is +inf).

Linearizability is P-compositional, so each book is checked on its own (Herlihy and Wing).
The search is WGL: walk the calls in time order, linearize a call whose return has not been
passed, backtrack on a return that was reached first; memoize (linearized set, stock) pairs.
It is exponential in the worst case: keep histories per book to a few thousand operations and
the concurrency to a few dozen clients.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bazar.testing.history import Kind, Operation

OPERATIONS_PER_BOOK_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Verdict:
    """`linearizable` is True iff every book's history is; `books_failed` names the others."""

    linearizable: bool
    books_failed: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Step:
    """An operation as the search sees it."""

    kind: Kind
    argument: int
    determinate: bool
    succeeded: bool
    observed: int | None
    call_s: float
    return_s: float


def check(operations: Iterable[Operation], initial_stock: Mapping[int, int]) -> Verdict:
    """Judge a whole history, one book at a time.

    Raises: ValueError for a book without an initial stock or with too many operations.
    """
    by_book: dict[int, list[Operation]] = defaultdict(list)
    for operation in operations:
        by_book[operation.book_id].append(operation)
    failed: list[int] = []
    for book_id in sorted(by_book):
        if book_id not in initial_stock:
            raise ValueError(f"no initial stock for book {book_id}")
        if not check_book(by_book[book_id], initial_stock[book_id]):
            failed.append(book_id)
    return Verdict(linearizable=not failed, books_failed=tuple(failed))


def check_book(operations: Sequence[Operation], initial_stock: int) -> bool:
    """Whether one book's operations are linearizable from `initial_stock`.

    Raises: ValueError with more than OPERATIONS_PER_BOOK_MAX operations.
    """
    if len(operations) > OPERATIONS_PER_BOOK_MAX:
        raise ValueError(f"{len(operations)} operations on one book: too many to check")
    assert initial_stock >= 0
    steps = [step for step in map(_step, operations) if step is not None]
    return _search(steps, initial_stock)


def describe(operations: Iterable[Operation], book_id: int) -> str:
    """One line per operation on `book_id`, in invocation order (for failure messages)."""
    lines = []
    for operation in sorted(operations, key=lambda o: o.invoke_s):
        if operation.book_id != book_id:
            continue
        complete = "open" if operation.complete_s is None else f"{operation.complete_s:.6f}"
        lines.append(
            f"p{operation.process} {operation.kind}({operation.argument}) "
            f"[{operation.invoke_s:.6f}, {complete}] {operation.outcome} {operation.result!r}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- the model


def _step(operation: Operation) -> _Step | None:
    """The search's view of an operation, or None when it cannot have changed or seen state."""
    outcome = "info" if operation.outcome is None else operation.outcome
    if operation.kind == "read":
        if outcome != "ok":
            return None
        assert isinstance(operation.result, int), "an ok read returns the stock"
        assert operation.complete_s is not None
        return _Step(
            kind="read",
            argument=0,
            determinate=True,
            succeeded=True,
            observed=operation.result,
            call_s=operation.invoke_s,
            return_s=operation.complete_s,
        )
    assert operation.argument is not None
    if outcome == "fail" and operation.result != "out_of_stock":
        return None
    if outcome == "info":
        return _Step(
            kind=operation.kind,
            argument=operation.argument,
            determinate=False,
            succeeded=False,
            observed=None,
            call_s=operation.invoke_s,
            return_s=math.inf,
        )
    assert operation.complete_s is not None
    observed = operation.result if isinstance(operation.result, int) else None
    return _Step(
        kind=operation.kind,
        argument=operation.argument,
        determinate=True,
        succeeded=outcome == "ok",
        observed=observed if operation.kind == "restock" else None,
        call_s=operation.invoke_s,
        return_s=operation.complete_s,
    )


def _variants(stock: int, step: _Step) -> tuple[int, ...]:
    """The stocks that `step`, linearized now, may leave (none: it cannot happen now)."""
    if step.kind == "read":
        return (stock,) if stock == step.observed else ()
    after = stock - step.argument if step.kind == "buy" else stock + step.argument
    possible = after >= 0
    if not step.determinate:
        return (stock, after) if possible else (stock,)
    if not step.succeeded:
        return () if possible else (stock,)
    if not possible or (step.observed is not None and step.observed != after):
        return ()
    return (after,)


# ---------------------------------------------------------------- the search


class _Events:
    """Calls and returns in time order, as a doubly linked list that can unlink and relink
    (dancing links), so that backtracking restores it exactly."""

    def __init__(self, steps: Sequence[_Step]) -> None:
        events: list[tuple[float, int, int]] = []
        for index, step in enumerate(steps):
            events.append((step.call_s, 0, index))
            events.append((step.return_s, 1, index))
        events.sort()  # at equal times calls come first: the operations overlap
        self.is_return = [kind == 1 for _, kind, _ in events]
        self.step_of = [index for _, _, index in events]
        count = len(events)
        self.next: list[int | None] = [p + 1 if p + 1 < count else None for p in range(count)]
        self.previous: list[int | None] = [p - 1 if p > 0 else None for p in range(count)]
        self.return_at = {index: p for p, (_, kind, index) in enumerate(events) if kind == 1}
        self.head: int | None = 0 if count else None

    def unlink(self, position: int) -> None:
        before, after = self.previous[position], self.next[position]
        if before is None:
            self.head = after
        else:
            self.next[before] = after
        if after is not None:
            self.previous[after] = before

    def relink(self, position: int) -> None:
        before, after = self.previous[position], self.next[position]
        if before is None:
            self.head = position
        else:
            self.next[before] = position
        if after is not None:
            self.previous[after] = position


def _search(steps: Sequence[_Step], initial_stock: int) -> bool:
    events = _Events(steps)
    stock = initial_stock
    linearized = 0  # bit i: step i is linearized
    seen: set[tuple[int, int]] = set()
    # (call position, stock before it, variant index taken)
    stack: list[tuple[int, int, int]] = []
    entry = events.head
    first_variant = 0
    while events.head is not None:
        if entry is None or events.is_return[entry]:
            # A pending operation returned before we linearized it: undo the last choice.
            if not stack:
                return False
            call, stock, variant = stack.pop()
            index = events.step_of[call]
            linearized &= ~(1 << index)
            events.relink(events.return_at[index])
            events.relink(call)
            entry, first_variant = call, variant + 1
            continue
        index = events.step_of[entry]
        variants = _variants(stock, steps[index])
        for variant in range(first_variant, len(variants)):
            key = (linearized | (1 << index), variants[variant])
            if key in seen:
                continue
            seen.add(key)
            stack.append((entry, stock, variant))
            stock = variants[variant]
            linearized |= 1 << index
            events.unlink(entry)
            events.unlink(events.return_at[index])
            entry = events.head
            break
        else:
            entry = events.next[entry]
        first_variant = 0
    assert linearized == (1 << len(steps)) - 1
    return True
