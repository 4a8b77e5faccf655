"""docs/PROTOCOL.md names every wire message, so the document cannot silently fall behind."""

from __future__ import annotations

import inspect
from pathlib import Path

import msgspec

from bazar import wire

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"


def test_protocol_doc_names_every_wire_struct() -> None:
    text = PROTOCOL.read_text()
    structs = [
        name
        for name, value in vars(wire).items()
        if inspect.isclass(value)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == wire.__name__
    ]
    assert len(structs) > 40
    missing = [name for name in structs if f"`{name}`" not in text]
    assert not missing
