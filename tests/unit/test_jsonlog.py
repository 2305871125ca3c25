"""LOG_FORMAT=json: one object a line with the correlation id and the current trace's ids."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh import correlation
from mesh.runtime import configure_logging
from mesh.settings import SettingsError
from tests.support.tracing import memory_tracing


@pytest.mark.usefixtures("restore_logging")
def test_a_json_line_names_the_correlation_and_the_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    tracer = memory_tracing(InMemorySpanExporter(), "svc").tracer
    assert tracer is not None
    log = logging.getLogger("mesh.test")
    with correlation.bound("cid-1"), tracer.start_as_current_span("work") as span:
        log.info("counted %d outcomes", 3)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    context = span.get_span_context()
    assert first["message"] == "counted 3 outcomes"
    assert first["level"] == "INFO"
    assert first["logger"] == "mesh.test"
    assert first["correlation_id"] == "cid-1"
    assert first["trace_id"] == f"{context.trace_id:032x}"
    assert first["span_id"] == f"{context.span_id:016x}"
    assert first["time"].endswith("+00:00")
    assert second["correlation_id"] == "-"
    assert "trace_id" not in second
    assert "RuntimeError: boom" in second["exception"]


def test_an_unknown_format_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="LOG_FORMAT='xml'"):
        configure_logging("INFO", "xml")
