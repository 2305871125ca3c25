"""The Kafka path of RecordStepOutcome: ``EssayStepOutcome`` events, a poll at a time.

One poll becomes one ``record_outcomes`` call (one PostgreSQL round trip, one Redis pipeline).
A malformed outcome or a permanent state error rejects just that message (it goes to the DLQ);
a backend failure raises for the whole poll, which the consumer retries without committing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from conductor_server.api.convert import outcome_from_event
from conductor_server.domain.model import OutcomeRecord
from conductor_server.service import Conductor
from mesh.bus import Message, Rejection
from mesh.errors import InvalidArgument

log = logging.getLogger(__name__)

ACCEPTED = frozenset({"essay_step_outcome"})  # payload field names (mesh.envelope.decode)


class OutcomeIntake:
    """A ``mesh.bus.BatchHandler`` counting the outcomes of each poll."""

    def __init__(self, conductor: Conductor) -> None:
        self._conductor = conductor

    async def __call__(self, messages: Sequence[Message]) -> list[Rejection]:
        rejected: list[Rejection] = []
        parsed: list[tuple[Message, OutcomeRecord]] = []
        for message in messages:
            try:
                record = outcome_from_event(
                    message.envelope.essay_step_outcome, message.envelope.event_id
                )
            except InvalidArgument as exc:
                rejected.append(Rejection(message, exc))
            else:
                parsed.append((message, record))
        if parsed:
            results = await self._conductor.record_outcomes([record for _, record in parsed])
            for (message, _), result in zip(parsed, results, strict=True):
                if result.error is not None:
                    rejected.append(Rejection(message, result.error))
        counted = sum(1 for _ in parsed) - len(rejected)
        log.debug(
            "poll of %d outcome(s): %d counted, %d rejected", len(messages), counted, len(rejected)
        )
        return rejected
