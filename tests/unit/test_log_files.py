"""`bazar.logs` in process: rotation by size with the configured bounds, the human text format,
transition lines turned into keys, and no line written twice when stderr is the log file.
Each test restores the root logger and structlog's defaults."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from bazar import logs
from bazar.config import LIMITS, Limits

SMALL = Limits(log_file_bytes_max=2000, log_files_kept=2)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def file_handler() -> logs.SizeRotatingFileHandler:
    found = [h for h in logging.getLogger().handlers if isinstance(h, logs.SizeRotatingFileHandler)]
    assert len(found) == 1, found
    return found[0]


def test_the_log_file_rotates_at_10_mib_keeping_5(tmp_path: Path) -> None:
    path = logs.configure("catalog-1", tmp_path, "json", LIMITS, stderr=io.StringIO())
    assert path == tmp_path / "logs" / "catalog-1.log"
    handler = file_handler()
    assert handler.baseFilename == str(path)
    assert (handler.maxBytes, handler.backupCount) == (10 * 1024 * 1024, 5)


def test_a_full_file_is_rotated_and_the_oldest_dropped(tmp_path: Path) -> None:
    path = logs.configure("order-2", tmp_path, "json", SMALL, stderr=io.StringIO())
    line = "x" * 100
    for number in range(200):  # about 30 kB of lines: many rotations of 2 kB files
        logging.getLogger("bazar.test").info("%s %d", line, number)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["order-2.log", "order-2.log.1", "order-2.log.2"]
    for kept in path.parent.iterdir():
        text = kept.read_text()
        assert len(text.encode()) < SMALL.log_file_bytes_max + 400  # one line past at most
        assert all(json.loads(row)["process"] == "order-2" for row in text.splitlines())
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["event"] == f"{line} 199"


def test_text_lines_read_as_before(tmp_path: Path) -> None:
    stderr = io.StringIO()
    path = logs.configure("frontend", tmp_path, "text", LIMITS, stderr=stderr)
    logging.getLogger("bazar.replication").info("transition=view tier=catalog epoch=2 role=primary")
    logging.getLogger("bazar.order").info("bought book %s", "RPCs for Noobs")
    logs.request_done(b"abc", "GET", "/info/1", 200, time.perf_counter(), {"cache": "hit"})
    text = path.read_text()
    assert text == stderr.getvalue()  # the same lines to both
    transition, bought, request = text.splitlines()
    assert "[info" in transition
    assert "transition=view tier=catalog epoch=2 role=primary" in transition
    assert "bought book RPCs for Noobs" in bought
    for part in ("request", "request_id=abc", "path=/info/1", "status=200", "cache=hit"):
        assert part in request
    assert not text.startswith("{")


def test_json_transition_pairs_become_keys(tmp_path: Path) -> None:
    path = logs.configure("frontend", tmp_path, "json", LIMITS, stderr=io.StringIO())
    logging.getLogger("bazar.frontend").warning(
        "transition=replica_skipped node=%s error=%s", "catalog-2", "Cannot connect to host"
    )
    line = json.loads(path.read_text())
    assert line["event"] == "transition"
    assert line["transition"] == "replica_skipped"
    assert line["node"] == "catalog-2"
    assert line["error"] == "Cannot connect to host"
    assert (line["level"], line["process"], line["logger"]) == (
        "warning",
        "frontend",
        "bazar.frontend",
    )
    assert list(line)[:5] == ["ts", "level", "process", "logger", "event"]


def test_key_values_reads_numbers_and_trailing_text() -> None:
    assert logs.key_values("transition=view tier=order epoch=7 seq=118 backups=-") == {
        "transition": "view",
        "tier": "order",
        "epoch": 7,
        "seq": 118,
        "backups": "-",
    }
    assert logs.key_values("transition=exit reason=a b c") == {
        "transition": "exit",
        "reason": "a b c",
    }


def test_a_request_line_has_its_fields_and_internal_ones_are_debug(tmp_path: Path) -> None:
    path = logs.configure("catalog-1", tmp_path, "json", LIMITS, stderr=io.StringIO())
    logs.request_done(b"r1", "POST", "/internal/append", 200, time.perf_counter())
    logs.request_done(b"r2", "GET", "/books/1", None, time.perf_counter())
    (line,) = [json.loads(row) for row in path.read_text().splitlines()]
    assert line["request_id"] == "r2"
    assert line["status"] is None  # the client left before an answer
    assert line["event"] == "request"
    assert line["duration_ms"] >= 0


def test_no_line_twice_when_stderr_is_the_log_file(tmp_path: Path) -> None:
    path = logs.log_path(tmp_path, "order-1")
    path.parent.mkdir(parents=True)
    with path.open("a") as stderr:  # as `bazar up` starts a child
        logs.configure("order-1", tmp_path, "json", LIMITS, stderr=stderr)
        logging.getLogger("bazar.order").info("bought book %s", "RPCs for Noobs")
    assert len(logging.getLogger().handlers) == 1
    assert len(path.read_text().splitlines()) == 1
