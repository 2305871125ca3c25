"""Dead letters: the ``DeadLetter`` envelope, writing it, and the operator's list/show/replay.

A dead-letter record goes to ``<topic>.dlq`` with the original key. Its value is an
``EventEnvelope`` whose payload is a ``DeadLetter`` (original topic, partition, offset, key,
timestamp, the original bytes untouched, error info, consumer group, service, attempts); its
headers repeat those facts (``dlq.*``) and carry the original record's headers as
``original.<name>``, so a replay restores them. Its event id is derived from
(group, topic, partition, offset): writing the same failure twice gives the same id.
"""

from __future__ import annotations

import base64
import json
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format

from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope as codec
from mesh.events.admin import read_topic
from mesh.events.bus import OutgoingRecord, Record, RecordWriter
from mesh.events.security import PLAINTEXT, KafkaSecurity
from mesh.events.topics import dlq_topic

H_TOPIC = "dlq.original_topic"
H_PARTITION = "dlq.original_partition"
H_OFFSET = "dlq.original_offset"
H_TIMESTAMP = "dlq.original_timestamp"
H_ERROR_TYPE = "dlq.error_type"
H_ERROR_MESSAGE = "dlq.error_message"
H_GROUP = "dlq.consumer_group"
H_SERVICE = "dlq.service"
H_ATTEMPTS = "dlq.attempts"
H_FAILED_AT = "dlq.failed_at"
ORIGINAL_PREFIX = "original."
H_REPLAY_OF = "replay.of"
H_REPLAYED_AT = "replay.at"

_MAX_MESSAGE = 2_000  # header copy of the error message
_MAX_TRACEBACK = 16_000
_ID_NAMESPACE = uuid.UUID("6b1d3f0e-64a2-4d39-9a59-6d4c1e0a5f11")


@dataclass(frozen=True, slots=True, eq=False)
class Failure:
    """A consumed record given up on: the error and how many attempts were made."""

    record: Record
    error: BaseException
    attempts: int = 1


def error_type(error: BaseException) -> str:
    """``module.QualName`` of the error's type (just the name for builtins)."""
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def build(
    failure: Failure, *, consumer_group: str, service: str, failed_at: datetime
) -> events_pb2.EventEnvelope:
    """The dead-letter envelope of ``failure`` (pure; the clock is an argument)."""
    record, error = failure.record, failure.error
    letter = events_pb2.DeadLetter(
        original_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key or b"",
        schema_version=codec.SCHEMA_VERSION,
        payload=record.value or b"",
        error_info=events_pb2.ErrorInfo(
            type=error_type(error),
            message=str(error),
            traceback="".join(traceback.format_exception(error))[-_MAX_TRACEBACK:],
        ),
        consumer_group=consumer_group,
        service=service,
        attempts=failure.attempts,
    )
    letter.timestamp.FromMilliseconds(record.timestamp)
    letter.failed_at.FromDatetime(failed_at)
    event_id = str(
        uuid.uuid5(
            _ID_NAMESPACE, f"{consumer_group}/{record.topic}/{record.partition}/{record.offset}"
        )
    )
    original = dict(record.headers)
    correlation = original.get(codec.HEADER_CORRELATION_ID, b"").decode(errors="replace")
    return codec.build(
        letter,
        source_service=service,
        event_id=event_id,
        correlation_id=correlation or None,
        timestamp=failed_at,
    )


def headers(failure: Failure, envelope: events_pb2.EventEnvelope) -> list[tuple[str, bytes]]:
    """The Kafka headers of a dead-letter record: the envelope's, the facts, the original's."""
    letter = envelope.dead_letter
    facts = [
        (H_TOPIC, letter.original_topic),
        (H_PARTITION, str(letter.partition)),
        (H_OFFSET, str(letter.offset)),
        (H_TIMESTAMP, str(failure.record.timestamp)),
        (H_ERROR_TYPE, letter.error_info.type),
        (H_ERROR_MESSAGE, letter.error_info.message[:_MAX_MESSAGE]),
        (H_GROUP, letter.consumer_group),
        (H_SERVICE, letter.service),
        (H_ATTEMPTS, str(letter.attempts)),
        (H_FAILED_AT, letter.failed_at.ToJsonString()),
    ]
    return (
        codec.headers(envelope)
        + [(name, value.encode()) for name, value in facts]
        + [(ORIGINAL_PREFIX + name, value) for name, value in failure.record.headers]
    )


def to_record(
    failure: Failure, *, consumer_group: str, service: str, failed_at: datetime
) -> OutgoingRecord:
    """The record to write to the dead-letter topic of the failed record's topic."""
    envelope = build(failure, consumer_group=consumer_group, service=service, failed_at=failed_at)
    return OutgoingRecord(
        topic=dlq_topic(failure.record.topic),
        value=codec.encode(envelope),
        key=failure.record.key,
        headers=tuple(headers(failure, envelope)),
    )


class DeadLetterQueue:
    """Writes failures to their dead-letter topics and waits for every acknowledgement."""

    def __init__(self, writer: RecordWriter, *, consumer_group: str, service: str) -> None:
        self._writer = writer
        self.consumer_group = consumer_group
        self.service = service

    async def put(self, failures: Sequence[Failure]) -> None:
        if not failures:
            return
        now = datetime.now(UTC)
        await self._writer.write(
            [
                to_record(
                    f, consumer_group=self.consumer_group, service=self.service, failed_at=now
                )
                for f in failures
            ]
        )


# --- operations: list, show, replay -------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class DeadLetterRecord:
    """One record read back from a dead-letter topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    @property
    def envelope(self) -> events_pb2.EventEnvelope:
        """The dead-letter envelope (raises ``EnvelopeError`` for a foreign record)."""
        return codec.decode(self.value, accept={"dead_letter"})

    @property
    def letter(self) -> events_pb2.DeadLetter:
        return self.envelope.dead_letter

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        n = len(ORIGINAL_PREFIX)
        return [(k[n:], v) for k, v in self.headers if k.startswith(ORIGINAL_PREFIX)]


def show(record: DeadLetterRecord) -> str:
    """A dead letter as JSON: its envelope (payload base64) and the payload decoded, if it is."""
    shown: dict[str, Any] = {
        "dlq": {"topic": record.topic, "partition": record.partition, "offset": record.offset},
        "headers": {k: v.decode(errors="replace") for k, v in record.headers},
    }
    try:
        envelope = record.envelope
    except codec.EnvelopeError as exc:
        shown["error"] = str(exc)
        shown["value_base64"] = base64.b64encode(record.value).decode()
        return json.dumps(shown, indent=2)
    shown["envelope"] = json_format.MessageToDict(envelope)
    try:
        original = events_pb2.EventEnvelope.FromString(envelope.dead_letter.payload)
    except Exception:  # any bytes may be dead-lettered; showing them must not fail
        original = None
    if original is not None and original.WhichOneof("payload"):
        shown["payload_decoded"] = json_format.MessageToDict(original)
    return json.dumps(shown, indent=2)


def replay_record(record: DeadLetterRecord, *, replayed_at: datetime) -> OutgoingRecord:
    """The original record again (same key and value bytes), marked as a replay."""
    letter = record.letter
    marks = [
        (H_REPLAY_OF, f"{record.topic}/{record.partition}/{record.offset}".encode()),
        (H_REPLAYED_AT, replayed_at.isoformat().encode()),
    ]
    return OutgoingRecord(
        topic=letter.original_topic,
        value=letter.payload,
        key=letter.key or None,
        headers=tuple(record.original_headers + marks),
    )


async def replay(writer: RecordWriter, records: Sequence[DeadLetterRecord]) -> int:
    """Publish each dead letter's original record to its original topic; return how many."""
    now = datetime.now(UTC)
    await writer.write([replay_record(r, replayed_at=now) for r in records])
    return len(records)


async def list_dead_letters(
    bootstrap_servers: str,
    topic: str,
    *,
    limit: int | None = None,
    security: KafkaSecurity = PLAINTEXT,
) -> list[DeadLetterRecord]:
    """The dead letters of ``topic`` (the original topic), read from the beginning of its DLQ."""
    records = await read_topic(bootstrap_servers, dlq_topic(topic), limit=limit, security=security)
    return [
        DeadLetterRecord(
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            key=r.key,
            value=r.value or b"",
            headers=tuple(r.headers),
        )
        for r in records
    ]
