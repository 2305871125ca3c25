"""The Kafka path of RecordStepOutcome: ``EssayStepOutcome`` events, a poll at a time.

One poll becomes one ``record_outcomes`` call (one PostgreSQL transaction, one Redis merge per
batch). A malformed outcome or a permanent state error rejects just that message (it goes to the
DLQ); a backend failure raises for the whole poll, which the consumer retries without committing.

Each record keeps its message's trace context (``Message.trace``), so the ``BatchStepCompleted``
that the step's last outcome causes continues that outcome's trace. Once the poll is counted
(committed), each completed step's latency is observed: from its last outcome's record
timestamp to now.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from conductor_server.domain.model import OutcomeRecord
from conductor_server.metrics import ConductorMetrics
from conductor_server.records import parse_outcome
from conductor_server.service import Conductor
from generated.huleedu.events.v1 import events_pb2
from mesh.errors import InvalidArgument
from mesh.events.bus import Message, Rejection
from mesh.events.topics import EventKind

log = logging.getLogger(__name__)

CONSUMED = (EventKind.ESSAY_STEP_OUTCOME,)
ACCEPTED = frozenset({"essay_step_outcome"})  # payload field names (mesh.events.envelope)


def outcome_from_event(
    event: events_pb2.EssayStepOutcome, event_id: str, trace: str = ""
) -> OutcomeRecord:
    """The outcome an ``EssayStepOutcome`` event reports."""
    return parse_outcome(
        event.batch_id,
        event.step,
        event.essay_id,
        event.outcome,
        event.output_storage_id,
        event_id,
        event.run_id,
        event.attempt,
        event.error if event.HasField("error") else None,
        trace,
    )


class OutcomeIntake:
    """A ``mesh.events.bus.BatchHandler`` counting the outcomes of each poll."""

    def __init__(self, conductor: Conductor, metrics: ConductorMetrics | None = None) -> None:
        self._conductor = conductor
        self._metrics = metrics

    async def __call__(self, messages: Sequence[Message]) -> list[Rejection]:
        rejected: list[Rejection] = []
        parsed: list[tuple[Message, OutcomeRecord]] = []
        for message in messages:
            try:
                record = outcome_from_event(
                    message.envelope.essay_step_outcome, message.envelope.event_id, message.trace
                )
            except InvalidArgument as exc:
                rejected.append(Rejection(message, exc))
            else:
                parsed.append((message, record))
        if parsed:
            results = await self._conductor.record_outcomes([record for _, record in parsed])
            now = time.time()
            for (message, _), result in zip(parsed, results, strict=True):
                if result.error is not None:
                    rejected.append(Rejection(message, result.error))
                elif result.completed_step and self._metrics is not None:
                    waited = max(now - message.record.timestamp / 1000, 0.0)
                    self._metrics.step_completion.labels(result.record.step).observe(waited)
        log.debug(
            "poll of %d outcome(s): %d counted, %d rejected",
            len(messages),
            len(parsed) - len(rejected),
            len(rejected),
        )
        return rejected
