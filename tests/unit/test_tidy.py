"""House rules that code review would otherwise have to remember (docs/style.md)."""

from __future__ import annotations

import ast
import re
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


ROOT = SOURCE.parents[1]
CITING = (
    "src",
    "tests",
    "bench",
    "docs",
    "deploy",
    "README.md",
    "compose.yaml",
    "Dockerfile",
    "Makefile",
    "pyproject.toml",
)
"""Where the code and the documents cite: every text file under these paths."""
VENDORED = ("src/bazar/static/swagger-ui/", "src/bazar/static/vendor/", "deploy/compose-spec")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".js", ".html", ".css", ".json", ".yaml", ".sql", ".txt"}
CONTRACT = "docs/contract.md"
SECTION = "\u00a7"
OUTSIDE = re.compile(r"\bSPEC\b|\bSTYLE\b|\bDESIGN\.md|\bresearch/")
"""The engineers' own specification, style guide, design guidance and research notes: they are
not in the repository, so nothing in it may cite them."""
DOCUMENT = re.compile(r"[\w./-]*\w\.md\b")
ANCHOR = re.compile(r"[\w./-]*\w\.md\b|\bRFC \d+")
SECTION_NUMBER = re.compile(SECTION + r"\s*(\d+(?:\.\d+)*)")
HEADING_NUMBER = re.compile(r"^#+\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)


def _citing_files() -> list[Path]:
    files = []
    for name in CITING:
        path = ROOT / name
        if path.is_file():
            files.append(path)  # named on purpose, whatever its suffix (Dockerfile, Makefile)
            continue
        files.extend(
            candidate
            for candidate in sorted(path.rglob("*"))
            if candidate.is_file()
            and candidate.suffix in TEXT_SUFFIXES
            and not candidate.relative_to(ROOT).as_posix().startswith(VENDORED)
        )
    return files


def _repository_documents() -> dict[str, Path]:
    roots = [ROOT / name for name in CITING if (ROOT / name).is_dir()]
    documents = [*ROOT.glob("*.md"), *(path for root in roots for path in root.rglob("*.md"))]
    return {path.relative_to(ROOT).as_posix(): path for path in documents}


def _resolve(name: str, citing: Path, documents: dict[str, Path]) -> Path | None:
    """The repository file a document name in `citing` means: a path from the root or from the
    citing file's folder, or the end of one repository path (`design.md`, `docs/design.md`)."""
    bare = re.sub(r"^(\.{0,2}/)+", "", name)
    for candidate in (ROOT / bare, citing.parent / name):
        if candidate.is_file():
            return candidate
    matches = [path for key, path in documents.items() if ("/" + key).endswith("/" + bare)]
    return matches[0] if len(matches) == 1 else None


def _citation_problems(path: Path, documents: dict[str, Path]) -> list[str]:
    relative = path.relative_to(ROOT).as_posix()
    problems = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        where = f"{relative}:{number}"
        if OUTSIDE.search(line):
            problems.append(f"{where}: cites a file outside the repository: {line.strip()}")
        for name in DOCUMENT.findall(line):
            if _resolve(name, path, documents) is None:
                problems.append(f"{where}: {name} names no one file of the repository")
        for cited in SECTION_NUMBER.finditer(line):
            anchors = [m.group(0) for m in ANCHOR.finditer(line, 0, cited.start())]
            anchor = anchors[-1] if anchors else (CONTRACT if relative == CONTRACT else None)
            if anchor is None:
                problems.append(f"{where}: {cited.group(0)} names no document before it")
            elif not anchor.startswith("RFC"):
                target = _resolve(anchor, path, documents)
                sections = HEADING_NUMBER.findall(target.read_text()) if target else []
                if target and cited.group(1) not in sections:
                    problems.append(f"{where}: {anchor} has no section {cited.group(1)}")
    return problems


def test_citations_name_repository_files() -> None:
    """What the code and the documents cite is in the repository (docs/style.md rule 11): no
    outside specification, style guide or research note; every document name is a file here;
    every section sign follows, on its line, the document it numbers (or an RFC), and that
    document has a heading with the number. Only the contract numbers its own sections bare."""
    documents = _repository_documents()
    files = _citing_files()
    assert ROOT / CONTRACT in files
    assert ROOT / "README.md" in files
    problems = [problem for path in files for problem in _citation_problems(path, documents)]
    assert not problems, "\n".join(problems)
