"""One structured log line per request: id, method, path, status, model, tokens and timings.

The middleware opens a record for each request in a context variable; the serving objects add
what only they know (model, token counts, finish reason, time to first token), including from the
streaming generator, which runs in a copy of the same context and so sees the same record.
"""

from __future__ import annotations

import contextvars
import json
import logging
from typing import Any

log = logging.getLogger("hermesd.requests")
_current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "hermesd_request", default=None
)


def open_record(**fields: Any) -> dict[str, Any]:
    record = dict(fields)
    _current.set(record)
    return record


def note(**fields: Any) -> None:
    """Add fields to the current request's record (no-op outside a request)."""
    record = _current.get()
    if record is not None:
        record.update(fields)


def emit(record: dict[str, Any]) -> None:
    log.info("%s", json.dumps(record, separators=(",", ":"), default=str))
