"""Logs of a process (docs/contract.md §4): to `<data-dir>/logs/<name>.log`, rotated by size, and to
stderr, as human text or one JSON object per line (`--log-format text|json`).

structlog formats everything, through stdlib logging: our `logging.getLogger(...)` calls and
uvicorn's go through the same `ProcessorFormatter` as the structured lines below, so a file
never mixes two formats. Rules:
- Every line has `ts`, `level`, `event`, `logger` and `process` (the node's name).
- A request is one line (`event: "request"`) written by the edge when its answer is sent;
  whatever served it may add fields to that line with `note` (the replica used, a cache hit).
  Peer traffic (`/internal/...`: leases, replication, several per second even when idle) is
  logged at DEBUG, so below the default level it costs one level check.
- Request lines are the hottest there are (one per cache hit): they are built directly in the
  handlers' format, without structlog's processors or a `LogRecord` (through them a line cost
  a third of a cache hit), and buffered per handler: written every `REQUEST_FLUSH_S`, at
  `REQUEST_BUFFER_CHARS`, before any other line of that handler (so lines keep their order),
  and at exit. A kill -9 loses at most the last `REQUEST_FLUSH_S` of request lines.
- A transition line (`transition=view tier=catalog epoch=2 ...`, written by the core as text,
  docs/style.md rule 12) stays that text in the text format; in JSON its pairs become keys, with
  `event: "transition"`, so that the pure core keeps producing plain strings.
"""

from __future__ import annotations

import asyncio
import atexit
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

REQUEST_LOGGER = "bazar.request"
REQUEST_FLUSH_S = 0.1
REQUEST_BUFFER_CHARS = 64 * 1024

_requests_stdlib = logging.getLogger(REQUEST_LOGGER)
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
    fields: dict[str, object] = {
        "ts": _now(),
        "level": logging.getLevelName(level).lower(),
        "process": _lines.process,
        "logger": REQUEST_LOGGER,
        "event": "request",
        "request_id": request_id.decode("latin-1"),
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": duration_ms,
    }
    if notes:
        fields.update(notes)
    _lines.add(fields)


_second: list[object] = [-1, ""]  # the last whole second and its text: one strftime a second


def _now() -> str:
    """As `_timestamp` writes it (ISO 8601, UTC, microseconds), at a fraction of the cost."""
    now = time.time()
    second = int(now)
    if _second[0] != second:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((now - second) * 1_000_000):06d}Z"


def _text_line(fields: Mapping[str, object]) -> str:
    """As structlog's ConsoleRenderer writes a line (without colours)."""
    rest = " ".join(
        f"{key}={value}"
        for key, value in fields.items()
        if key not in ("ts", "level", "logger", "event")
    )
    return f"{fields['ts']} [{fields['level']:<9}] {fields['event']:<30} [{REQUEST_LOGGER}] {rest}"


class BufferedLines:
    """The request lines of every handler, each in the handler's format, until written."""

    def __init__(self) -> None:
        self.process = "-"
        self.handlers: list[RequestAware] = []
        self._timer: asyncio.TimerHandle | None = None
        self._chars = 0

    def add(self, fields: Mapping[str, object]) -> None:
        json_line: str | None = None
        text_line: str | None = None
        for handler in self.handlers:
            if handler.json:
                json_line = json_line or _json.encode(fields).decode()
                handler.pending.append(json_line)
            else:
                text_line = text_line or _text_line(fields)
                handler.pending.append(text_line)
        self._chars += len(json_line or text_line or "")
        if self._chars >= REQUEST_BUFFER_CHARS:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (a tool, a test): at once
                self.flush()
                return
            self._timer = loop.call_later(REQUEST_FLUSH_S, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._chars = 0
        for handler in self.handlers:
            handler.acquire()
            try:
                handler.write_pending()
            finally:
                handler.release()


_lines = BufferedLines()
atexit.register(_lines.flush)


class RequestAware(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler that also writes the buffered request lines, before any other line."""

    json = False
    pending: list[str]

    def write_pending(self) -> None:
        """With the handler's lock held."""
        if not self.pending or self.stream is None:
            return
        text = "\n".join(self.pending) + "\n"
        self.pending.clear()
        self.stream.write(text)
        self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        self.write_pending()  # (`handle` holds our lock)
        super().emit(record)


class RequestAwareStream(RequestAware):
    def __init__(self, stream: TextIO, *, json_lines: bool) -> None:
        super().__init__(stream)
        self.json = json_lines
        self.pending = []


class SizeRotatingFileHandler(RotatingFileHandler, RequestAware):
    """Rotates once the file has reached `maxBytes` (so a file may end one line past it).
    The standard test stats the path twice and formats every record twice (CPython 3.11),
    on every line; the stream's position is all it needs here."""

    def __init__(self, path: Path, *, json_lines: bool, **options: object) -> None:
        super().__init__(path, **options)  # type: ignore[arg-type]
        self.json = json_lines
        self.pending = []

    def shouldRollover(self, record: logging.LogRecord | None) -> int:
        return int(self.stream is not None and self.stream.tell() >= self.maxBytes)

    def write_pending(self) -> None:
        if self.pending and self.shouldRollover(None):
            self.doRollover()
        super().write_pending()

    def emit(self, record: logging.LogRecord) -> None:
        self.write_pending()
        RotatingFileHandler.emit(self, record)


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
    json_lines = log_format == "json"
    _lines.flush()
    to_file = SizeRotatingFileHandler(
        path,
        json_lines=json_lines,
        maxBytes=limits.log_file_bytes_max,
        backupCount=limits.log_files_kept,
        encoding="utf-8",
    )
    to_file.setFormatter(formatter(process, log_format))
    handlers: list[RequestAware] = [to_file]
    if not _same_file(stderr, path):
        to_stderr = RequestAwareStream(stderr, json_lines=json_lines)
        to_stderr.setFormatter(formatter(process, log_format, colors=_tty(stderr)))
        handlers.append(to_stderr)
    _lines.process = process
    _lines.handlers = handlers
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
