"""Logs of a process (SPEC §4): to `<data-dir>/logs/<name>.log`, rotated by size, and to
stderr, as human text or one JSON object per line (`--log-format text|json`).

structlog formats everything, through stdlib logging: our `logging.getLogger(...)` calls and
uvicorn's go through the same `ProcessorFormatter` as the structured lines below, so a file
never mixes two formats. Rules:
- Every line has `ts`, `level`, `event`, `logger` and `process` (the node's name).
- A request is one line (`event: "request"`) written by the edge when its answer is sent;
  whatever served it may add fields to that line with `note` (the replica used, a cache hit).
  Peer traffic (`/internal/...`: leases, replication, several per second even when idle) is
  logged at DEBUG, so below the default level it costs one level check.
- A transition line (`transition=view tier=catalog epoch=2 ...`, written by the core as text,
  STYLE rule 12) stays that text in the text format; in JSON its pairs become keys, with
  `event: "transition"`, so that the pure core keeps producing plain strings.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TextIO

import msgspec
import structlog
from structlog.stdlib import ProcessorFormatter
from structlog.typing import EventDict, Processor, WrappedLogger

from bazar.config import Limits, LogFormat

LOGS_DIRECTORY = "logs"
INTERNAL_PREFIX = "/internal/"
TRANSITION_PREFIX = "transition="
HEAD_KEYS = ("ts", "level", "process", "logger", "event")

# The fields that whatever serves a request adds to its line (`note`). One dict per request,
# set by the edge for the duration of the request's task: a context variable, not state.
REQUEST_NOTES: ContextVar[dict[str, object] | None] = ContextVar("request_notes", default=None)

_requests_stdlib = logging.getLogger("bazar.request")
_requests = structlog.stdlib.get_logger("bazar.request")
_json = msgspec.json.Encoder(enc_hook=repr)


def log_path(data_dir: Path, process: str) -> Path:
    return data_dir / LOGS_DIRECTORY / f"{process}.log"


def note(key: str, value: object) -> None:
    """Add a field to the line of the request being served (no-op outside a request)."""
    notes = REQUEST_NOTES.get()
    if notes is not None:
        notes[key] = value


def request_done(
    request_id: bytes,
    method: str,
    path: str,
    status: int | None,
    started_s: float,
    notes: Mapping[str, object] | None = None,
) -> None:
    """The request's one line. `status` is None when no answer was sent (the client left);
    `started_s` is a `time.perf_counter()` reading."""
    level = logging.DEBUG if path.startswith(INTERNAL_PREFIX) else logging.INFO
    if not _requests_stdlib.isEnabledFor(level):
        return
    duration_ms = round((time.perf_counter() - started_s) * 1000, 3)
    fields = notes or {}
    _requests.log(
        level,
        "request",
        request_id=request_id.decode("latin-1"),
        method=method,
        path=path,
        status=status,
        duration_ms=duration_ms,
        **fields,
    )


class SizeRotatingFileHandler(RotatingFileHandler):
    """Rotates once the file has reached `maxBytes` (so a file may end one line past it).
    The standard test stats the path twice and formats every record twice (CPython 3.11),
    on every line; the stream's position is all it needs here."""

    def shouldRollover(self, record: logging.LogRecord) -> int:
        return int(self.stream is not None and self.stream.tell() >= self.maxBytes)


def key_values(text: str) -> dict[str, object]:
    """`transition=view tier=catalog epoch=2` as a dict; digits become integers. A word
    without `=` continues the value before it (an error message with spaces, last)."""
    fields: dict[str, str] = {}
    key: str | None = None
    for word in text.split(" "):
        name, equals, value = word.partition("=")
        if equals and name.isidentifier():
            key = name
            fields[key] = value
        elif key is not None:
            fields[key] = f"{fields[key]} {word}"
    return {k: int(v) if v.isascii() and v.isdigit() else v for k, v in fields.items()}


def _transition_keys(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    event = event_dict.get("event")
    if isinstance(event, str) and event.startswith(TRANSITION_PREFIX):
        event_dict["event"] = "transition"
        for key, value in key_values(event).items():
            event_dict.setdefault(key, value)
    return event_dict


def _timestamp(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """When the line was logged, not when a handler formats it: the file and stderr agree."""
    record: logging.LogRecord = event_dict["_record"]
    moment = datetime.fromtimestamp(record.created, UTC)
    event_dict["ts"] = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return event_dict


def _process_key(process: str) -> Processor:
    def add(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        event_dict["process"] = process
        return event_dict

    return add


def _json_line(logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
    """The common keys first, for whoever reads a line by eye."""
    line = {key: event_dict.pop(key) for key in HEAD_KEYS if key in event_dict}
    line.update(event_dict)
    return _json.encode(line).decode()


def formatter(process: str, log_format: LogFormat, *, colors: bool = False) -> ProcessorFormatter:
    """The one formatter of a process's handlers, for structlog's lines and stdlib's alike."""
    common: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _timestamp,
        _process_key(process),
    ]
    if log_format == "json":
        last: list[Processor] = [
            _transition_keys,
            structlog.processors.format_exc_info,
            ProcessorFormatter.remove_processors_meta,
            _json_line,
        ]
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors,
            timestamp_key="ts",
            exception_formatter=structlog.dev.plain_traceback,
        )
        last = [ProcessorFormatter.remove_processors_meta, renderer]
    return ProcessorFormatter(processors=[*common, *last])


def _same_file(stream: TextIO, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(stream.fileno()), os.stat(path))
    except (OSError, ValueError):  # no file descriptor (captured), or closed
        return False


def configure(
    process: str,
    data_dir: Path,
    log_format: LogFormat,
    limits: Limits,
    stderr: TextIO = sys.stderr,
) -> Path:
    """Send every log line of this process to its rotated file and to stderr, at INFO.
    When stderr already is that file (`bazar up` sends a child's output there, to keep
    what is written before logging starts or outside it), the file handler alone writes,
    so that no line appears twice. Returns the file's path."""
    path = log_path(data_dir, process)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = SizeRotatingFileHandler(
        path,
        maxBytes=limits.log_file_bytes_max,
        backupCount=limits.log_files_kept,
        encoding="utf-8",
    )
    to_file.setFormatter(formatter(process, log_format))
    handlers: list[logging.Handler] = [to_file]
    if not _same_file(stderr, path):
        to_stderr = logging.StreamHandler(stderr)
        to_stderr.setFormatter(formatter(process, log_format, colors=_tty(stderr)))
        handlers.append(to_stderr)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return path


def _tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False
