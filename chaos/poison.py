"""Poison: records no consumer of the mesh can ever process, one of every kind.

Each ``Poison`` names its kind, the topic it goes to, its key (a live batch's id, so it shares a
partition with good records that must still be counted after it), its bytes, and the error the
dead letter should name. ``send`` writes them with a plain producer whose request limit admits
the oversized one, and notes where Kafka put each in the ledger.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from chaos.ledger import Ledger, OutcomeKey, Position
from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope
from mesh.events.topics import EventKind, topic_name

# Just under the broker's default limit (message.max.bytes 1,048,588): Kafka takes the record,
# and the dead letter that wraps it (error, traceback, headers) would not fit.
OVERSIZED_BYTES = 1_047_400
NOT_AN_ENVELOPE = b"\xff" * 64  # field 31, wire type 7: no protobuf parses it
SOURCE = "chaos-poison"
OUTCOME_TYPE = events_pb2.EssayStepOutcome.DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True)
class Poison:
    kind: str
    event: EventKind  # the topic
    key: str
    value: bytes
    error: str  # the error type's name the dead letter should carry


def _outcome(batch: str, step: str, essay: str, succeeded: bool = True) -> events_pb2.EventEnvelope:
    outcome = events_pb2.STEP_OUTCOME_SUCCEEDED if succeeded else events_pb2.STEP_OUTCOME_FAILED
    payload = events_pb2.EssayStepOutcome(
        batch_id=batch, step=step, essay_id=essay, outcome=outcome
    )
    return envelope.build(payload, source_service=SOURCE, event_id=f"poison-{uuid.uuid4()}")


def _bytes(event: events_pb2.EventEnvelope) -> bytes:
    return envelope.encode(event)


def outcome_poison(batch: str, essay: str) -> list[Poison]:
    """Every kind of poison outcome, keyed by ``batch`` (a batch of the load, ``essay`` one of
    its essays) but the oversized one (see ``oversized``)."""
    out = EventKind.ESSAY_STEP_OUTCOME
    no_payload = events_pb2.EventEnvelope(
        event_id=f"poison-{uuid.uuid4()}", event_type=OUTCOME_TYPE
    )
    mismatched = _outcome(batch, "spellcheck", essay)
    mismatched.event_type = events_pb2.BatchCreated.DESCRIPTOR.full_name
    no_id = _outcome(batch, "spellcheck", essay)
    no_id.event_id = ""
    other_kind = envelope.build(events_pb2.BatchCreated(batch_id=batch), source_service=SOURCE)
    return [
        Poison("not an envelope", out, batch, NOT_AN_ENVELOPE, "UndecodableEnvelope"),
        Poison("envelope without payload", out, batch, _bytes(no_payload), "InvalidEnvelope"),
        Poison("mismatched event_type", out, batch, _bytes(mismatched), "InvalidEnvelope"),
        Poison("empty event id", out, batch, _bytes(no_id), "InvalidEnvelope"),
        Poison("unexpected payload kind", out, batch, _bytes(other_kind), "UnexpectedPayload"),
        Poison(
            "outcome without essay id",
            out,
            batch,
            _bytes(_outcome(batch, "spellcheck", "")),
            "InvalidArgument",
        ),
        Poison(
            "unknown batch",
            out,
            batch,
            _bytes(_outcome(f"no-such-batch-{uuid.uuid4().hex[:8]}", "spellcheck", essay)),
            "UnknownBatch",
        ),
        Poison(
            "unknown step",
            out,
            batch,
            _bytes(_outcome(batch, "no_such_step", essay)),
            "UnknownStep",
        ),
        Poison(
            "essay not in the batch",
            out,
            batch,
            _bytes(_outcome(batch, "spellcheck", "no-such-essay")),
            "EssayNotExpected",
        ),
    ]


def not_expected(batch: str, essay: str) -> Poison:
    """An nlp outcome for an essay of ``batch`` that has no spellcheck outcome yet: nlp does
    not expect it."""
    value = _bytes(_outcome(batch, "nlp", essay))
    return Poison(
        "essay not expected by the step",
        EventKind.ESSAY_STEP_OUTCOME,
        batch,
        value,
        "EssayNotExpected",
    )


def conflicting(counted: OutcomeKey, succeeded: bool) -> Poison:
    """The other result for an outcome already counted."""
    batch, step, essay = counted
    value = _bytes(_outcome(batch, step, essay, not succeeded))
    return Poison(
        "conflicting second outcome",
        EventKind.ESSAY_STEP_OUTCOME,
        batch,
        value,
        "ConflictingOutcome",
    )


def oversized(batch: str) -> Poison:
    """~1 MB that is not an envelope: its dead letter cannot carry it."""
    return Poison(
        "oversized (dead letter does not fit)",
        EventKind.ESSAY_STEP_OUTCOME,
        batch,
        b"\xff" * OVERSIZED_BYTES,
        "UndecodableEnvelope",
    )


def completion_poison(batch: str) -> list[Poison]:
    """Poison for the BatchService's consumer: garbage, and a completion of an unknown batch."""
    done = EventKind.BATCH_STEP_COMPLETED
    unknown = envelope.build(
        events_pb2.BatchStepCompleted(
            batch_id=f"no-such-batch-{uuid.uuid4().hex[:8]}",
            step="spellcheck",
            total=1,
            succeeded=1,
            satisfied=True,
        ),
        source_service=SOURCE,
    )
    return [
        Poison("completion: not an envelope", done, batch, NOT_AN_ENVELOPE, "UndecodableEnvelope"),
        Poison("completion: unknown batch", done, batch, _bytes(unknown), "BatchNotFound"),
    ]


async def send(
    bootstrap: str, namespace: str, poisons: Sequence[Poison], ledger: Ledger
) -> list[Position]:
    """Write each poison record, note where it went; where each went."""
    producer: Any = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2**21)
    await producer.start()
    positions: list[Position] = []
    try:
        for poison in poisons:
            topic = topic_name(poison.event, namespace)
            sent = await producer.send_and_wait(topic, poison.value, key=poison.key.encode())
            positions.append((sent.topic, sent.partition, sent.offset))
            ledger.poisoned(positions[-1], poison.kind)
        return positions
    finally:
        await producer.stop()
