"""The simulator's controls are deliberate bugs in production code (`driver.Controls`,
`Leases.unsafe_promote_catching_up`, `SimStore.unsafe_no_intent`,
`Cache.unsafe_fill_stale`). They must be unreachable from anything a user runs: no command
line, cluster file or environment variable can set them. Checked on the source: outside
the module that defines each switch, only the simulator (`bazar/testing/`) may name it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "bazar"
SWITCHES = {
    "Controls": "replication/driver.py",
    "reply_before_persist": "replication/driver.py",
    "read_without_check": "replication/driver.py",
    "unsafe_promote_catching_up": "frontend/views.py",
    "unsafe_no_intent": "testing/sim_store.py",
    "unsafe_fill_stale": "frontend/cache.py",
}


def names_in(path: Path) -> set[str]:
    """Every identifier, attribute and keyword argument the module uses."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg is not None:
            found.add(node.arg)
        elif isinstance(node, ast.alias):
            found.add(node.asname or node.name)
    return found


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_only_the_simulator_can_set_an_unsafe_switch(switch: str) -> None:
    users = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if switch in names_in(path)
        and path.relative_to(SRC).parts[0] != "testing"
        and str(path.relative_to(SRC)) != SWITCHES[switch]
    )
    assert users == [], f"{switch} is reachable outside the simulator: {users}"


def test_the_switches_exist_where_the_test_looks_for_them() -> None:
    for switch, module in SWITCHES.items():
        assert switch in names_in(SRC / module), (switch, module)
