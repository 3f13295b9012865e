"""Application logs as JSON lines (docs/security.md, "Logs").

One JSON object per line: `time`, `level`, `logger`, `message`, `request_id`, then the record's extra fields.
`json.dumps` escapes every control character, so a message cannot end its line and forge a second entry
(OWASP ASVS 5.0 V16.4.1: log entries are encoded against log injection).

A log line is not a place for personal data (docs/architecture.md, invariant 6): callers log identifiers, never
identity codes, record content or credentials. An exception is logged by its type and stack frames only — never its
message, which may echo an input value (OWASP ASVS 5.0 V16.2.5: no sensitive data in logs).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from flask import g, has_app_context

# The attributes every LogRecord has; anything else on a record came from `extra=` and is written as a field.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def stack(tb: TracebackType | None) -> list[str]:
    """Where an error happened, as `file:line in function` frames — the code's location, no values."""
    return [f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in traceback.extract_tb(tb)]


def _request_id() -> str | None:
    if has_app_context():
        request_id = g.get("request_id")
        return request_id if isinstance(request_id, str) else None
    return None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or _request_id(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The type and the frames, never str(exception): see the module's docstring.
            entry["error"] = record.exc_info[0].__qualname__
            entry["stack"] = stack(record.exc_info[2])
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        try:
            return json.dumps(entry, ensure_ascii=False, default=str)
        except (TypeError, ValueError):  # an extra field json cannot take (a dict with non-string keys): its repr
            return json.dumps({k: v if isinstance(v, str | None) else repr(v) for k, v in entry.items()})


def configure_logging(level: int | str = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """Send every logger's records to `stream` (stderr) as JSON lines. Called by the served app before it is built,
    so that Flask finds a handler and adds none of its own."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
