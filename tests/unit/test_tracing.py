"""Tracing: when it is on, the trace context on events and records, consumer spans per message."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope as codec
from mesh.events.bus import Message, OutgoingEvent, Rejection
from mesh.events.memory import StoredRecord
from mesh.events.retry import PermanentError
from mesh.events.topics import EventKind
from mesh.postgres import outbox
from mesh.runtime import StartupError
from mesh.settings import TelemetrySettings, from_env
from mesh.tracing import propagation
from mesh.tracing.provider import OFF, open_tracing
from tests.support.tracing import memory_tracing

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _event() -> OutgoingEvent:
    payload = events_pb2.EssayStepOutcome(
        batch_id="b", step="nlp", essay_id="e1", outcome=events_pb2.STEP_OUTCOME_SUCCEEDED
    )
    return OutgoingEvent(
        EventKind.ESSAY_STEP_OUTCOME, codec.build(payload, source_service="t", event_id="ev-1")
    )


def _message(headers: Sequence[tuple[str, bytes]] = ()) -> Message:
    event = _event()
    record = StoredRecord("topic", 0, 7, 0, b"b", codec.encode(event.envelope), tuple(headers))
    return Message(record, event.envelope)


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, ()),
        ({"OTEL_TRACES_EXPORTER": "none"}, ()),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "otlp,console,otlp"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, ()),
    ],
)
def test_the_standard_variables_decide_whether_to_trace(
    environ: dict[str, str], exporters: tuple[str, ...]
) -> None:
    assert from_env(TelemetrySettings, environ).exporters == exporters


def test_tracing_is_off_by_default_and_installs_no_hook() -> None:
    tracing = open_tracing(TelemetrySettings(), "svc")
    assert tracing is OFF
    assert not tracing.enabled

    async def handler(messages: Sequence[Message]) -> None:
        return None

    assert tracing.consumer(handler) is handler
    assert tracing.client_interceptors() == []


def test_exporters_load_by_their_standard_names() -> None:
    for name in ("console", "otlp"):
        tracing = open_tracing(TelemetrySettings(traces_exporter=name), "svc")
        try:
            assert tracing.enabled
        finally:
            tracing.close()


def test_an_unknown_exporter_fails_start_up_naming_the_variable() -> None:
    with pytest.raises(StartupError, match="OTEL_TRACES_EXPORTER=zipkin"):
        open_tracing(TelemetrySettings(traces_exporter="zipkin"), "svc")


def test_an_event_carries_the_context_it_was_built_in_to_its_record_and_outbox_row() -> None:
    exporter = InMemorySpanExporter()
    tracing = memory_tracing(exporter, "svc")
    assert tracing.tracer is not None
    assert _event().trace == ""  # outside any span: no header
    assert codec.HEADER_TRACEPARENT not in dict(_event().to_record().headers)
    with tracing.tracer.start_as_current_span("cause") as span:
        event = _event()
    expected = propagation.traceparent(span.get_span_context())
    assert event.trace == expected
    assert dict(event.to_record().headers)[codec.HEADER_TRACEPARENT] == expected.encode()
    row = {
        "topic_kind": event.kind.value,
        "payload": codec.encode(event.envelope),
        "message_key": b"b",
        "headers": json.dumps(
            {k: v.decode() for k, v in codec.headers(event.envelope, event.trace)}
        ),
    }
    relayed = outbox.to_record(row, "ns")  # what the relay publishes, whenever it does
    assert dict(relayed.headers)[codec.HEADER_TRACEPARENT] == expected.encode()


def test_propagation_reads_only_valid_parents() -> None:
    assert propagation.header([("event_id", b"x"), ("traceparent", PARENT.encode())]) == PARENT
    assert propagation.header([("event_id", b"x")]) == ""
    assert propagation.context_of(PARENT) is not None
    assert propagation.context_of("") is None
    assert propagation.context_of("00-garbage") is None
    with propagation.activated(PARENT):
        assert propagation.current() == PARENT
    assert propagation.current() == ""


async def test_a_consumer_span_per_message_whose_parent_is_the_records_context() -> None:
    exporter = InMemorySpanExporter()
    tracing = memory_tracing(exporter, "svc")
    seen: list[str] = []

    async def handler(messages: Sequence[Message]) -> list[Rejection]:
        seen.extend(m.trace for m in messages)
        return [Rejection(messages[1], PermanentError("bad one"))]

    traced = tracing.consumer(handler)
    messages = [_message([("traceparent", PARENT.encode())]), _message()]
    rejections = await traced(messages)
    assert rejections is not None
    assert len(list(rejections)) == 1
    first, second = exporter.get_finished_spans()
    assert first.kind == SpanKind.CONSUMER
    assert first.name == "process topic"
    assert first.parent is not None
    assert first.parent.span_id == int(PARENT.split("-")[2], 16)
    assert first.context is not None
    assert first.context.trace_id == int(PARENT.split("-")[1], 16)
    assert seen[0] == propagation.traceparent(first.context)
    assert second.parent is None  # a record without a context starts a trace of its own
    assert first.status.status_code is StatusCode.UNSET
    assert second.status.status_code is StatusCode.ERROR
    assert first.attributes is not None
    assert first.attributes["messaging.message.id"] == "ev-1"
    assert first.attributes["messaging.kafka.offset"] == 7


async def test_a_failed_batch_ends_every_span_in_error() -> None:
    exporter = InMemorySpanExporter()
    tracing = memory_tracing(exporter, "svc")

    async def handler(messages: Sequence[Message]) -> None:
        raise ConnectionError("database down")

    with pytest.raises(ConnectionError):
        await tracing.consumer(handler)([_message(), _message()])
    spans = exporter.get_finished_spans()
    assert [s.status.status_code for s in spans] == [StatusCode.ERROR, StatusCode.ERROR]
