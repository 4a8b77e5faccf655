"""Validation at the edge (`bazar.request`): PATCH /books bodies, as pure functions
(docs/contract.md §8).

The full table of malformed requests runs against a real cluster in
`tests/integration/test_bad_input.py`; these are the rules of `patch_command` alone, in
milliseconds.
"""

from __future__ import annotations

import pytest

from bazar.errors import InvalidRequest, UnsupportedMediaType
from bazar.request import patch_command
from bazar.wire import UpdateBook

DELTA_ABS_MAX = 10**9
JSON = "application/json"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        JSON,
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
    ],
)
def test_patch_with_an_empty_body_is_invalid_whatever_its_content_type(
    content_type: str | None,
) -> None:
    with pytest.raises(InvalidRequest, match="cost and/or stock_delta"):
        patch_command(6, b"", content_type, DELTA_ABS_MAX)


def test_patch_with_an_empty_object_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="cost and/or stock_delta"):
        patch_command(6, b"{}", JSON, DELTA_ABS_MAX)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_patch_with_a_body_that_is_not_json_is_unsupported(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        patch_command(6, b"stock_delta=1", content_type, DELTA_ABS_MAX)


def test_patch_becomes_one_catalog_command() -> None:
    command = patch_command(6, b'{"cost": 12.5, "stock_delta": -2}', JSON, DELTA_ABS_MAX)
    assert command == UpdateBook(book_id=6, cost_cents=1250, stock_delta=-2)
    assert patch_command(6, b'{"stock_delta": 0}', JSON, DELTA_ABS_MAX) == UpdateBook(book_id=6)
