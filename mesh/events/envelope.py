"""The event envelope codec: build, encode, decode and validate ``EventEnvelope`` records.

Every Kafka record value is one serialized ``huleedu.events.v1.EventEnvelope``; the payload's
type is the ``oneof`` field that is set, so a consumer needs nothing but the bytes.

Errors (all permanent: ``retriable = False``; a record that fails here goes to the DLQ)::

    EnvelopeError
    ├── UndecodableEnvelope   the bytes are not an EventEnvelope
    ├── InvalidEnvelope       parsed, but no payload, no event id, or a mismatched event_type
    └── UnexpectedPayload     a valid envelope whose payload this consumer does not accept
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from generated.huleedu.events.v1 import events_pb2
from mesh.correlation import correlation_id as current_correlation_id
from mesh.tracing.propagation import TRACEPARENT

EventEnvelope = events_pb2.EventEnvelope
_parse = EventEnvelope.FromString

SCHEMA_VERSION = 1
CONTENT_TYPE = b"application/x-protobuf"

# Kafka header names written by every producer of the mesh.
HEADER_EVENT_TYPE = "event_type"
HEADER_EVENT_ID = "event_id"
HEADER_CORRELATION_ID = "correlation_id"
HEADER_CONTENT_TYPE = "content-type"
HEADER_SCHEMA_VERSION = "schema_version"
HEADER_TRACEPARENT = TRACEPARENT  # W3C trace context of the event's cause (mesh.tracing)

# payload message full name -> oneof field name, and back
FIELD_BY_TYPE: dict[str, str] = {
    field.message_type.full_name: field.name
    for field in EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields
    if field.message_type is not None
}
TYPE_BY_FIELD: dict[str, str] = {name: full for full, name in FIELD_BY_TYPE.items()}


class EnvelopeError(ValueError):
    """A record value that is not a usable event envelope. Never retried."""

    retriable = False


class UndecodableEnvelope(EnvelopeError):
    """The bytes do not parse as an ``EventEnvelope``."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"not an EventEnvelope: {detail}")
        self.detail = detail


class InvalidEnvelope(EnvelopeError):
    """The envelope parsed but breaks a rule of the contract."""

    def __init__(self, reason: str, event_id: str = "") -> None:
        super().__init__(f"invalid envelope {event_id or '<no id>'}: {reason}")
        self.reason = reason
        self.event_id = event_id


class UnexpectedPayload(EnvelopeError):
    """A valid envelope whose payload kind the consumer does not accept."""

    def __init__(self, payload: str, accepted: Collection[str], event_id: str) -> None:
        super().__init__(
            f"event {event_id}: payload {payload!r} not accepted (expected {sorted(accepted)})"
        )
        self.payload = payload
        self.accepted = frozenset(accepted)
        self.event_id = event_id


def build(
    payload: ProtoMessage,
    *,
    source_service: str,
    event_id: str | None = None,
    correlation_id: str | None = None,
    timestamp: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
) -> events_pb2.EventEnvelope:
    """Wrap ``payload`` in an envelope.

    ``event_id`` defaults to a fresh uuid4 (pass a deterministic one for events that can be
    emitted twice); ``correlation_id`` defaults to the current context's, else a fresh uuid4.
    """
    full_name = payload.DESCRIPTOR.full_name
    field = FIELD_BY_TYPE.get(full_name)
    if field is None:
        raise TypeError(f"{full_name} is not an EventEnvelope payload")
    envelope = EventEnvelope(
        event_id=event_id or str(uuid.uuid4()),
        event_type=full_name,
        source_service=source_service,
        schema_version=SCHEMA_VERSION,
        correlation_id=correlation_id or current_correlation_id.get() or str(uuid.uuid4()),
        metadata=dict(metadata or {}),
    )
    envelope.event_timestamp.FromDatetime(timestamp or datetime.now(UTC))
    getattr(envelope, field).CopyFrom(payload)
    return envelope


def add_essay_refs(refs: Any, essays: Iterable[tuple[str, str]]) -> None:
    """Append ``(essay_id, text_storage_id)`` pairs to ``refs``, a repeated ``EssayRef`` field of
    a payload being built: in place, a quarter of the time of a list of ``EssayRef`` messages
    (10,000 refs: 2.2 ms against 8.0 ms)."""
    add_ref = refs.add
    for essay_id, storage_id in essays:
        ref = add_ref()
        ref.essay_id = essay_id
        ref.text_storage_id = storage_id


def encode(envelope: events_pb2.EventEnvelope) -> bytes:
    """The wire bytes of ``envelope``."""
    return envelope.SerializeToString()


def decode(data: bytes | None, accept: Collection[str] | None = None) -> events_pb2.EventEnvelope:
    """Parse and validate one record value.

    ``accept`` is the set of payload field names (e.g. ``{"essay_step_outcome"}``) the caller
    handles; ``None`` accepts every payload. Raises an ``EnvelopeError``.
    """
    if not data:
        raise UndecodableEnvelope("empty value")
    try:
        envelope = _parse(data)
    except DecodeError as exc:
        raise UndecodableEnvelope(str(exc)) from exc
    # The valid case in three checks: the payload named by event_type is the one set (a oneof
    # holds one field, so HasField settles it), the id is not empty, the payload is accepted.
    # Anything else is sorted out by _refuse, which names the fault.
    field = FIELD_BY_TYPE.get(envelope.event_type)
    if (
        field is not None
        and envelope.HasField(field)  # type: ignore[arg-type]  # a payload field name
        and envelope.event_id
        and (accept is None or field in accept)
    ):
        return envelope
    _refuse(envelope, accept)


def _refuse(envelope: events_pb2.EventEnvelope, accept: Collection[str] | None) -> NoReturn:
    """Raise the error that describes what is wrong with a decoded ``envelope``."""
    field = envelope.WhichOneof("payload")
    event_id = envelope.event_id
    if field is None:
        raise InvalidEnvelope("no payload set", event_id)
    if not event_id:
        raise InvalidEnvelope("empty event_id")
    if envelope.event_type != TYPE_BY_FIELD[field]:
        raise InvalidEnvelope(
            f"event_type {envelope.event_type!r} does not match payload {TYPE_BY_FIELD[field]}",
            event_id,
        )
    if accept is not None and field not in accept:
        raise UnexpectedPayload(field, accept, event_id)
    raise AssertionError("_refuse called for a valid envelope")  # pragma: no cover


def payload_field(envelope: events_pb2.EventEnvelope) -> str:
    """The name of the payload field that is set (``""`` when none is)."""
    return envelope.WhichOneof("payload") or ""


def payload_of(envelope: events_pb2.EventEnvelope) -> ProtoMessage:
    """The payload message of a decoded envelope."""
    message: ProtoMessage = getattr(envelope, payload_field(envelope))
    return message


def partition_key(envelope: events_pb2.EventEnvelope) -> str:
    """The batch id an event belongs to, which keys its Kafka record (empty if it has none)."""
    payload = payload_of(envelope)
    batch_id = getattr(payload, "batch_id", "")
    if isinstance(batch_id, str) and batch_id:
        return batch_id
    if isinstance(payload, events_pb2.EssaySpellcheckRequested):
        return payload.entity_ref.parent_id or payload.entity_ref.entity_id
    return ""


def headers(envelope: events_pb2.EventEnvelope, trace: str = "") -> list[tuple[str, bytes]]:
    """The Kafka headers that describe ``envelope`` without decoding it; ``trace`` (a W3C
    ``traceparent``, see ``mesh.tracing.propagation``) names the span that caused the event."""
    found = [
        (HEADER_EVENT_TYPE, envelope.event_type.encode()),
        (HEADER_EVENT_ID, envelope.event_id.encode()),
        (HEADER_CORRELATION_ID, envelope.correlation_id.encode()),
        (HEADER_CONTENT_TYPE, CONTENT_TYPE),
        (HEADER_SCHEMA_VERSION, str(envelope.schema_version).encode()),
    ]
    if trace:
        found.append((HEADER_TRACEPARENT, trace.encode()))
    return found
