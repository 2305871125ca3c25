"""Spans of events: a consumer span per consumed message, a ``create`` span per dispatch.

A consumer handles a whole poll in one call (one transaction for all its messages), but each
message belongs to its own trace: ``TracedHandler`` starts one ``process <topic>`` span per
message, as a child of the context in the record's ``traceparent`` header, and puts the span's
own ``traceparent`` on the message (``Message.trace``). A handler that builds events because of
one message makes them inside ``propagation.activated(message.trace)`` (or hands the value on in
a record), so those events are that message's children. The spans end when the handler returns;
a message it rejected (or a batch it failed) ends with an error status.

Attribute names follow OpenTelemetry's messaging conventions (``messaging.system``,
``messaging.destination.name``, ``messaging.operation.type``, ``messaging.message.id``,
``messaging.kafka.offset``, ``messaging.destination.partition.id``); ``huleedu.*`` attributes
name the event type, the batch and the correlation id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from mesh.events import envelope as codec
from mesh.events.bus import BatchHandler, Message, Rejection
from mesh.tracing import propagation


def _process_attributes(message: Message) -> dict[str, Any]:
    record, envelope = message.record, message.envelope
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": record.topic,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": record.offset,
        "messaging.message.id": envelope.event_id,
        "huleedu.event_type": envelope.event_type,
        "huleedu.correlation_id": envelope.correlation_id,
        "huleedu.batch_id": codec.partition_key(envelope),
    }


class TracedHandler:
    """A ``BatchHandler`` around another: one consumer span per message of each call."""

    def __init__(self, tracer: trace.Tracer, handler: BatchHandler) -> None:
        self._tracer = tracer
        self._handler = handler

    async def __call__(self, messages: Sequence[Message]) -> Iterable[Rejection] | None:
        spans = [self._start(message) for message in messages]
        try:
            rejections = await self._handler(messages)
        except BaseException as exc:
            for span in spans:
                _failed(span, exc)
                span.end()
            raise
        rejected = {id(r.message): r.error for r in rejections or ()}
        for message, span in zip(messages, spans, strict=True):
            error = rejected.get(id(message))
            if error is not None:
                _failed(span, error)
            span.end()
        return rejections

    def _start(self, message: Message) -> trace.Span:
        parent = propagation.context_of(propagation.header(message.record.headers))
        span = self._tracer.start_span(
            f"process {message.record.topic}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=_process_attributes(message),
        )
        message.trace = propagation.traceparent(span.get_span_context())
        return span


def _failed(span: trace.Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


@contextlib.contextmanager
def creating(
    tracer: trace.Tracer, destination: str, attributes: Mapping[str, str | int]
) -> Iterator[trace.Span]:
    """A short ``create <destination>`` producer span, current while an event is built."""
    with tracer.start_as_current_span(
        f"create {destination}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "create",
            "messaging.destination.name": destination,
            **attributes,
        },
    ) as span:
        yield span
