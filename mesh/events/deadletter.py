"""Dead letters: the ``DeadLetter`` envelope, writing it, and the operator's list/show/replay.

A dead-letter record goes to ``<topic>.dlq`` with the original key. Its value is an
``EventEnvelope`` whose payload is a ``DeadLetter`` (original topic, partition, offset, key,
timestamp, the original bytes untouched, their size and SHA-256, error info, consumer group,
service, attempts); its headers repeat those facts (``dlq.*``) and carry the original record's
headers as ``original.<name>``, so a replay restores them. Its event id is derived from
(group, topic, partition, offset): writing the same failure twice gives the same id.

**The size rule.** A record the broker accepted can be too large to dead-letter as it is (the
letter wraps it with more). A letter larger than ``max_bytes`` is written without the original
bytes and headers: the original value goes to the consumer's ``PayloadVault`` (PostgreSQL's
``dead_letter_payloads``, under its SHA-256), where ``huleedu dlq show`` and ``replay`` find it;
without a vault only its size and digest remain. The partition moves on either way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

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
# A letter above this goes without the original bytes: Kafka's default limit on a record batch
# (message.max.bytes, 1,048,588) less room for the batch's own overhead.
MAX_LETTER_BYTES = 1_000_000


class PayloadVault(Protocol):
    """Keeps the original value of a record whose dead letter would not hold it."""

    storage: events_pb2.PayloadStorage.ValueType

    async def keep(self, sha256: str, payload: bytes, failure: Failure, group: str) -> None: ...

    async def fetch(self, sha256: str) -> bytes | None: ...


log = logging.getLogger(__name__)
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
    failure: Failure,
    *,
    consumer_group: str,
    service: str,
    failed_at: datetime,
    storage: events_pb2.PayloadStorage.ValueType = events_pb2.PAYLOAD_STORAGE_UNSPECIFIED,
) -> events_pb2.EventEnvelope:
    """The dead-letter envelope of ``failure`` (pure; the clock is an argument); with a
    ``storage``, without the original bytes, which are kept there instead."""
    record, error = failure.record, failure.error
    payload = record.value or b""
    letter = events_pb2.DeadLetter(
        original_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key or b"",
        schema_version=codec.SCHEMA_VERSION,
        payload=payload if storage == events_pb2.PAYLOAD_STORAGE_UNSPECIFIED else b"",
        payload_size=len(payload),
        payload_sha256=digest(payload),
        payload_storage=storage,
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


def digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def headers(
    failure: Failure, envelope: events_pb2.EventEnvelope, originals: bool = True
) -> list[tuple[str, bytes]]:
    """The Kafka headers of a dead-letter record: the envelope's, the facts, and (unless
    ``originals`` is false) the original record's."""
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
    original = [(ORIGINAL_PREFIX + name, value) for name, value in failure.record.headers]
    return (
        codec.headers(envelope)
        + [(name, value.encode()) for name, value in facts]
        + (original if originals else [])
    )


def to_record(
    failure: Failure,
    *,
    consumer_group: str,
    service: str,
    failed_at: datetime,
    storage: events_pb2.PayloadStorage.ValueType = events_pb2.PAYLOAD_STORAGE_UNSPECIFIED,
) -> OutgoingRecord:
    """The record to write to the dead-letter topic of the failed record's topic."""
    envelope = build(
        failure,
        consumer_group=consumer_group,
        service=service,
        failed_at=failed_at,
        storage=storage,
    )
    inline = storage == events_pb2.PAYLOAD_STORAGE_UNSPECIFIED
    return OutgoingRecord(
        topic=dlq_topic(failure.record.topic),
        value=codec.encode(envelope),
        key=failure.record.key,
        headers=tuple(headers(failure, envelope, originals=inline)),
    )


def size(record: OutgoingRecord) -> int:
    """Bytes the record takes in a batch, near enough (value, key, headers)."""
    head = sum(len(name) + len(value) for name, value in record.headers)
    return len(record.value) + len(record.key or b"") + head


class DeadLetterQueue:
    """Writes failures to their dead-letter topics and waits for every acknowledgement."""

    def __init__(
        self,
        writer: RecordWriter,
        *,
        consumer_group: str,
        service: str,
        max_bytes: int | None = MAX_LETTER_BYTES,
        vault: PayloadVault | None = None,
    ) -> None:
        self._writer = writer
        self.consumer_group = consumer_group
        self.service = service
        self._max_bytes = max_bytes
        self._vault = vault

    async def put(self, failures: Sequence[Failure]) -> None:
        if not failures:
            return
        now = datetime.now(UTC)
        await self._writer.write([await self._letter(f, now) for f in failures])

    async def _letter(self, failure: Failure, now: datetime) -> OutgoingRecord:
        """The dead-letter record of ``failure``, without its original bytes if it is too large
        (which are then kept in the vault, when there is one)."""
        group, service = self.consumer_group, self.service
        letter = to_record(failure, consumer_group=group, service=service, failed_at=now)
        if self._max_bytes is None or size(letter) <= self._max_bytes:
            return letter
        payload = failure.record.value or b""
        storage = events_pb2.PAYLOAD_STORAGE_DISCARDED
        if self._vault is not None:
            await self._vault.keep(digest(payload), payload, failure, self.consumer_group)
            storage = self._vault.storage
        log.warning(
            "dead letter of %s[%d]@%d is %d bytes: its original value (%d bytes) is kept %s",
            failure.record.topic,
            failure.record.partition,
            failure.record.offset,
            size(letter),
            len(payload),
            "in the vault" if self._vault is not None else "nowhere (no vault)",
        )
        return to_record(
            failure, consumer_group=group, service=service, failed_at=now, storage=storage
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


class OriginalNotKept(LookupError):
    """A dead letter's original value is in none of the places that could hold it."""


async def original_value(record: DeadLetterRecord, vault: PayloadVault | None) -> bytes:
    """The original record's value: in the letter, or in ``vault`` for an oversized one.

    Raises ``OriginalNotKept`` when it was discarded, or is in a vault not given or missing.
    """
    letter = record.letter
    if letter.payload_storage == events_pb2.PAYLOAD_STORAGE_UNSPECIFIED:
        return letter.payload
    kept = None
    if letter.payload_storage == events_pb2.PAYLOAD_STORAGE_POSTGRESQL and vault is not None:
        kept = await vault.fetch(letter.payload_sha256)
    if kept is None:
        where = events_pb2.PayloadStorage.Name(letter.payload_storage)
        raise OriginalNotKept(
            f"the original value ({letter.payload_size} bytes, sha256 {letter.payload_sha256}) "
            f"of {record.topic}[{record.partition}]@{record.offset} is not available ({where})"
        )
    return kept


def show(record: DeadLetterRecord, original: bytes | None = None) -> str:
    """A dead letter as JSON: its envelope (payload base64) and the original value decoded, if
    it is an envelope (``original``: the value kept elsewhere, for an oversized letter)."""
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
    value = original if original is not None else envelope.dead_letter.payload
    try:
        decoded = events_pb2.EventEnvelope.FromString(value)
    except Exception:  # any bytes may be dead-lettered; showing them must not fail
        decoded = None
    if decoded is not None and decoded.WhichOneof("payload"):
        shown["payload_decoded"] = json_format.MessageToDict(decoded)
    return json.dumps(shown, indent=2)


def replay_record(
    record: DeadLetterRecord, value: bytes, *, replayed_at: datetime
) -> OutgoingRecord:
    """The original record again (same key and ``value``, its original bytes), marked as a
    replay."""
    letter = record.letter
    marks = [
        (H_REPLAY_OF, f"{record.topic}/{record.partition}/{record.offset}".encode()),
        (H_REPLAYED_AT, replayed_at.isoformat().encode()),
    ]
    return OutgoingRecord(
        topic=letter.original_topic,
        value=value,
        key=letter.key or None,
        headers=tuple(record.original_headers + marks),
    )


async def replay(
    writer: RecordWriter, records: Sequence[DeadLetterRecord], vault: PayloadVault | None = None
) -> int:
    """Publish each dead letter's original record to its original topic; return how many.

    Raises ``OriginalNotKept`` (before publishing anything) when one original is unavailable.
    """
    now = datetime.now(UTC)
    values = [await original_value(r, vault) for r in records]
    await writer.write(
        [replay_record(r, v, replayed_at=now) for r, v in zip(records, values, strict=True)]
    )
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
