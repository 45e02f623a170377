"""Logs and the request id, the same in both services: every log line carries the
``X-Request-Id`` of the request it serves (the API passes it to the OCR server and stores it
with each job); text lines, or JSON lines with ``OCR_LOG_FORMAT=json``."""

from __future__ import annotations

import logging
import os
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-Id"
# What a client's id may look like to be kept (the jobs column holds 64 characters); anything
# else, a newline in a header included, is replaced rather than logged.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,64}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# JSON lines: these fields, renamed to what log collectors look for, plus any ``extra``.
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s"
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger"}

# Characters a log line shows escaped: controls (a newline would start a forged line, ESC a
# terminal's escape sequence), Unicode's line and paragraph separators and its invisible
# format characters (bidirectional overrides reorder what a reader sees), and the surrogates
# that stand for bytes of a header that are not UTF-8.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb\ud800-\udfff]"
)

# Probes and scrapes come every few seconds: their access lines are DEBUG, the rest INFO.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def request_id_from(given: str | None) -> str:
    """The client's id when it is a sensible one, else a new one."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str | None) -> None:
    """The id of the request this thread or task now serves (None: none)."""
    _request_id.set(value)


@contextmanager
def request_id_scope(value: str | None) -> Iterator[None]:
    """Log lines inside carry ``value`` (a job's request id while the job is read)."""
    token = _request_id.set(value)
    try:
        yield
    finally:
        _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get() or "-"
        return True


def log_access(log: logging.Logger, method: str, path: str, status: int, seconds: float) -> None:
    """One line per answered request (the same fields in both services)."""
    log.log(
        logging.DEBUG if path in QUIET_PATHS else logging.INFO,
        "%s %s %d %.1f ms",
        method,
        path,
        status,
        seconds * 1000,
        extra={
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
        },
    )


def escape_unsafe(text: str) -> str:
    """``text`` with each character of _UNSAFE as its Python escape (``\\n``, ``\\x1b``)."""
    return _UNSAFE.sub(lambda found: found.group().encode("unicode_escape").decode(), text)


class TextFormatter(logging.Formatter):
    """One line per record whatever a client sent: the message (a path, a method, a header a
    client chose) is escaped; a traceback keeps its line breaks and escapes the rest."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_unsafe(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        lines = super().formatException(ei).split("\n")
        return "\n".join(escape_unsafe(line) for line in lines)


class UtcJsonFormatter(JsonFormatter):
    """JSON lines whose ``time`` is ISO 8601 in UTC to the millisecond, as log collectors
    read it: ``2026-12-04T19:27:18.123Z`` (not the local, zone-less default)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def formatter(log_format: str) -> logging.Formatter:
    # JSON lines escape every control character (json.dumps) and stay one line.
    if log_format == "json":
        return UtcJsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAMES, timestamp=False)
    return TextFormatter(TEXT_FORMAT)


def say(program: str, message: str, level: int = logging.ERROR) -> None:
    """What a command says of itself (why it stops, what it did): ``program: message``, or
    with OCR_LOG_FORMAT=json a JSON record, which a log collector reads like every other line.
    Read from the environment itself: it is said when the settings are what failed, too."""
    if os.environ.get("OCR_LOG_FORMAT", "").strip().lower() != "json":
        print(f"{program}: {message}", file=sys.stderr if level >= logging.WARNING else sys.stdout)
        return
    if not logging.getLogger().handlers:
        configure_logging("INFO", "json")
    logging.getLogger(program).log(level, message)


def configure_logging(level: str, log_format: str) -> None:
    """Root logging of a service process: one stderr handler, text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic names its dialect each time the schema is checked, i.e. on every /readyz probe.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
