"""Structured logs: one line per record on stderr, carrying the task, request or replica it is about.

    configure_logging("auto", "INFO")          # once per process, at its start
    with log_context(task_id=task.id, attempt=2, agent_type="calculator"):
        logger.info("attempt started")           # the line carries the three fields

Guarantees:
- `configure_logging` installs exactly one handler on the root logger (calling it again replaces
  it), and takes over from any other root handler writing to the process's stdout or stderr (such
  as the one a Ray `LoggingConfig` installs in workers), so each record is written once. The
  handler writes to whatever `sys.stderr` is when it writes, which is what Ray captures into the
  worker's log files. Ray's own loggers (`ray`, `ray.serve`) keep their handlers.
- the context is a `contextvars` value: it follows `asyncio` tasks (fixed when they are created)
  and `asyncio.to_thread`, and a block's fields are gone when it ends.
- formatting never raises: values JSON cannot encode are written as `str(value)`.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from typing import Any, Final

LOG_FIELDS: Final = ("task_id", "attempt", "agent_type", "tenant", "request_id", "replica",
                      "run_id")
FORMATS: Final = ("auto", "json", "text")
TEXT_KEYS: Final = {"task_id": "task", "agent_type": "agent", "request_id": "request",
                     "run_id": "run"}

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "ymera_log_context", default={})


def current_log_context() -> dict[str, Any]:
    """The fields in force here (a copy)."""
    return dict(_context.get())


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Put `fields` (names from `LOG_FIELDS`; None values are ignored) on every log record of
    this block, merged over the outer context, which is back in force when the block ends.
    An unknown field name raises `TypeError`."""
    unknown = sorted(set(fields) - set(LOG_FIELDS))
    if unknown:
        raise TypeError(f"unknown log context field(s) {unknown}; known: {', '.join(LOG_FIELDS)}")
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def bind_log_context(**fields: Any) -> None:
    """Add `fields` to the context for the rest of the current one, for a field learnt midway
    (a request's tenant once its caller is known): the enclosing `log_context` block still
    restores its outer context when it ends. Same rules as `log_context`."""
    with log_context(**fields):
        merged = _context.get()
    _context.set(merged)


class LogContextFilter(logging.Filter):
    """Copies the current context's fields onto each record (a field passed with `extra=`
    wins). On a handler it covers every record the handler writes; on a logger, that logger's."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: record.__dict__[name] for name in LOG_FIELDS
            if record.__dict__.get(name) is not None}


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string or argument must not lose the line
        return f"{record.msg!s} {record.args!s}"


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _traceback(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    parts = []
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts) or None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the LOG_FIELDS present, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname,
                                "logger": record.name, "message": _message(record),
                                **_fields(record)}
        trace = _traceback(self, record)
        if trace:
            line["exc_info"] = trace
        try:
            return json.dumps(line, default=str)
        except (TypeError, ValueError):  # e.g. a circular structure
            return json.dumps({key: str(value) for key, value in line.items()})


class TextFormatter(logging.Formatter):
    """`<ts> <LEVEL> <logger> key=value … message` then any traceback, for terminals."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = [f"{TEXT_KEYS.get(k, k)}={v}" for k, v in _fields(record).items()]
        line = " ".join([_timestamp(record), record.levelname, record.name, *pairs,
                         _message(record)])
        trace = _traceback(self, record)
        return f"{line}\n{trace}" if trace else line


class _StderrHandler(logging.StreamHandler):
    """Writes to `sys.stderr` as it is at each write (pytest, Ray and Serve may swap it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr


def configure_logging(fmt: str = "auto", level: str | int = "INFO") -> None:
    """Log this process's records as `fmt` ("auto": text when stderr is a terminal, else JSON;
    "json"; "text") at `level` and above, through one root handler (see the module's
    guarantees). Raises `ValueError` for an unknown format or level."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    numeric = _level(level)
    if fmt == "auto":
        fmt = "text" if _stderr_is_terminal() else "json"
    handler = _StderrHandler()
    handler.setFormatter(TextFormatter() if fmt == "text" else JsonFormatter())
    handler.addFilter(LogContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _StderrHandler) or _writes_to_std_stream(old):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)


def _level(level: str | int) -> int:
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    names = logging.getLevelNamesMapping()
    if isinstance(level, str) and level.upper() in names:
        return names[level.upper()]
    raise ValueError(f"log level must be one of {', '.join(sorted(names))} or a number, "
                     f"not {level!r}")


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _writes_to_std_stream(handler: logging.Handler) -> bool:
    if type(handler) is not logging.StreamHandler:  # not files, not pytest's capture
        return False
    try:
        return handler.stream.fileno() in (1, 2)
    except (AttributeError, ValueError, OSError):
        return False
