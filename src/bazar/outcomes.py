"""One item's outcome in a batched call, both ways: each item of a batch is answered with
its result or its own error, so that one item's refusal does not fail the others.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from bazar.errors import ERRORS_BY_CODE, BazarError, Unavailable
from bazar.transport import TransportError
from bazar.wire import ErrorDetail

T = TypeVar("T")


async def settle(call: Awaitable[T]) -> tuple[T | None, ErrorDetail | None]:
    """The receiving side of `outcome_of`: one item's result, or its error as a detail, so
    that one item's refusal does not fail the others of its batch."""
    try:
        return await call, None
    except BazarError as error:
        return None, ErrorDetail(code=error.code, message=error.message)


def outcome_of(result: T | None, error: ErrorDetail | None) -> T | Exception:
    """One item of a batched reply: its result, or its error as the BazarError it names."""
    if result is not None:
        return result
    if error is None:
        return TransportError("an item with neither result nor error", definite=False)
    return ERRORS_BY_CODE.get(error.code, Unavailable)(error.message)
