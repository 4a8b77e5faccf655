"""Validation of public requests at the edge (docs/contract.md §8), as pure functions.

Each function turns raw text from a client into a checked value or raises a 4xx `BazarError`;
nothing invalid gets past the front end, so replicas only ever see well-formed commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

import msgspec
from msgspec import UNSET

from bazar.errors import InvalidRequest, UnsupportedMediaType
from bazar.money import COST_CENTS_MAX, cost_to_cents
from bazar.wire import BookPatch, PurchaseBody, UpdateBook

_purchase_decoder = msgspec.json.Decoder(PurchaseBody)
_patch_decoder = msgspec.json.Decoder(BookPatch)

FORM = "application/x-www-form-urlencoded"
INT64_DIGITS = 19  # checked before int(), which refuses more than 4,300 digits
JSON = "application/json"


def media_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower()


def positive_id(text: str) -> int:
    """Raises: InvalidRequest unless `text` is ASCII digits naming a positive int64."""
    if not (text.isascii() and text.isdigit()):
        raise InvalidRequest(f"the id must be a positive integer, not {text[:40]!r}")
    digits = text.lstrip("0")
    if not digits or len(digits) > INT64_DIGITS or int(digits) > 2**63 - 1:
        raise InvalidRequest(f"the id must be between 1 and 2^63-1, not {text[:40]}")
    return int(digits)


def page_limit(text: str | None, default: int, maximum: int) -> int:
    """Raises: InvalidRequest unless `text` is an integer in 1..maximum."""
    if text is None:
        return default
    digits = text.lstrip("0") if text.isascii() and text.isdigit() else ""
    if not digits or len(digits) > INT64_DIGITS or not 1 <= int(digits) <= maximum:
        raise InvalidRequest(f"limit must be an integer from 1 to {maximum}")
    return int(digits)


def search_topic(topic: str, chars_max: int) -> str:
    """Raises: InvalidRequest for an empty, blank or too long topic."""
    if not topic or not topic.strip():
        raise InvalidRequest("the topic must not be empty")
    if len(topic) > chars_max:
        raise InvalidRequest(f"the topic must be at most {chars_max} characters")
    return topic


def _quantity(value: int, quantity_max: int) -> int:
    if not 1 <= value <= quantity_max:
        raise InvalidRequest(f"the quantity must be an integer from 1 to {quantity_max}")
    return value


def purchase_quantity(body: bytes, content_type: str | None, quantity_max: int) -> int:
    """The quantity of a purchase body: none or empty means 1.

    Raises: UnsupportedMediaType, InvalidRequest.
    """
    if not body:
        return 1
    kind = media_type(content_type)
    if kind == JSON:
        return _json_quantity(body, quantity_max)
    if kind == FORM:
        return _form_quantity(body, quantity_max)
    raise UnsupportedMediaType(
        f"send the quantity as {JSON} or {FORM}, not {content_type or 'no content type'}"
    )


def _json_quantity(body: bytes, quantity_max: int) -> int:
    try:
        parsed = _purchase_decoder.decode(body)
    except msgspec.DecodeError as error:
        raise InvalidRequest(f"bad purchase body: {error}") from None
    if parsed.item_number is not UNSET and parsed.quantity is not UNSET:
        raise InvalidRequest("give item_number or quantity, not both")
    value = parsed.quantity if parsed.item_number is UNSET else parsed.item_number
    return 1 if value is UNSET else _quantity(value, quantity_max)


def _form_quantity(body: bytes, quantity_max: int) -> int:
    try:
        fields = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("bad form body") from None
    names = [name for name, _ in fields]
    unknown = set(names) - {"item_number", "quantity"}
    if unknown:
        raise InvalidRequest(f"unknown form fields: {', '.join(sorted(unknown))}")
    if len(names) > 1:
        raise InvalidRequest("give item_number or quantity once")
    if not fields:
        return 1
    text = fields[0][1]
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise InvalidRequest(f"the quantity must be an integer from 1 to {quantity_max}")
    return _quantity(int(text), quantity_max)


def idempotency_key(headers: Mapping[str, str], chars_max: int) -> str | None:
    """The client's Idempotency-Key, None when absent.

    Raises: InvalidRequest for an empty, too long, non-ASCII or non-printable key.
    """
    key = headers.get("idempotency-key")
    if key is None:
        return None
    if not 0 < len(key) <= chars_max or not key.isascii() or not key.isprintable():
        raise InvalidRequest(f"Idempotency-Key must be 1 to {chars_max} printable ASCII characters")
    return key


def patch_command(
    book_id: int, body: bytes, content_type: str | None, stock_delta_abs_max: int
) -> UpdateBook:
    """The catalog command of a PATCH /books/{id} body (JSON only).

    An empty body asks for nothing, like `{}`, so it is 422 whatever its content type: there
    is nothing to misread, hence nothing for 415 to say (docs/contract.md §8).
    Raises: UnsupportedMediaType, InvalidRequest.
    """
    if not body:
        raise InvalidRequest("give cost and/or stock_delta (the body is empty)")
    if media_type(content_type) != JSON:
        raise UnsupportedMediaType(f"PATCH /books takes {JSON}")
    try:
        patch = _patch_decoder.decode(body)
    except msgspec.DecodeError as error:
        raise InvalidRequest(f"bad book update: {error}") from None
    if patch.cost is UNSET and patch.stock_delta is UNSET:
        raise InvalidRequest("give cost and/or stock_delta")
    cost_cents = None
    if patch.cost is not UNSET:
        cost_cents = cost_to_cents(patch.cost)
        if cost_cents is None:
            raise InvalidRequest(
                f"cost must be a number from 0 to {COST_CENTS_MAX // 100} with at most 2 decimals"
            )
    delta = 0 if patch.stock_delta is UNSET else patch.stock_delta
    if abs(delta) > stock_delta_abs_max:
        raise InvalidRequest(f"|stock_delta| must be at most {stock_delta_abs_max}")
    return UpdateBook(book_id=book_id, cost_cents=cost_cents, stock_delta=delta)
