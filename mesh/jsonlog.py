"""``JsonFormatter``: one JSON object a line, for log collectors (``LOG_FORMAT=json``).

Each line carries the time (UTC, ISO 8601), level, logger, message, the correlation id (as the
text format does) and, inside a span, the ``trace_id`` and ``span_id`` of OpenTelemetry's
current span (lowercase hex, as trace backends show them), so a log line leads to its trace.
An exception's traceback is the ``exception`` field.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from opentelemetry import trace


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line (``CorrelationFilter`` runs first on the handler)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", "-"),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = f"{span.trace_id:032x}"
            line["span_id"] = f"{span.span_id:016x}"
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)
