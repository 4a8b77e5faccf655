"""House rules that code review would otherwise have to remember (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "bazar"
IMPURE = {
    "asyncio",
    "sqlite3",
    "aiohttp",
    "starlette",
    "uvicorn",
    "time",
    "random",
    "os",
    "socket",
    "logging",
    "subprocess",
    "threading",
    "datetime",
    "uuid",
}
FUNCTION_LINES_MAX = 70
LINE_COLUMNS_MAX = 100


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


PURE = (
    "replication/replica.py",
    "replication/ready.py",
    "frontend/views.py",
    "frontend/cache.py",
    "frontend/balancer.py",
)
"""The pure parts of each component: the protocol core and the view manager, the cache and
the balancer. They take time as `now_ms` and do no I/O, so tests and the simulator drive
them step by step."""


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_do_no_io(name: str) -> None:
    path = SOURCE / name
    assert not (_imports(path) & IMPURE), f"{path.name} imports {_imports(path) & IMPURE}"


def test_only_config_and_cli_read_the_environment() -> None:
    readers = {
        path.name
        for path in SOURCE.rglob("*.py")
        if "os.environ" in path.read_text() and "testing" not in path.parts
    }
    assert readers <= {"cli.py", "config.py"}


def test_functions_are_short_and_lines_narrow() -> None:
    long_functions = []
    for path in SOURCE.rglob("*.py"):
        text = path.read_text()
        assert all(len(line) <= LINE_COLUMNS_MAX for line in text.splitlines()), path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > FUNCTION_LINES_MAX:
                    long_functions.append(f"{path.name}:{node.name} ({length} lines)")
    assert not long_functions


def test_every_module_says_why() -> None:
    missing = [
        path.name
        for path in SOURCE.rglob("*.py")
        if path.name != "__init__.py" and ast.get_docstring(ast.parse(path.read_text())) is None
    ]
    assert not missing
