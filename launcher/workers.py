"""Demo workers: stand-ins for the spellchecker, NLP, CJ and AI-feedback services.

They take every ``StepCommand`` and report an ``EssayStepOutcome`` per essay, failing a fixed
share of essays. Which essays fail is a hash of (batch, step, essay), so a rerun fails the same
ones; event ids are deterministic too, so a redelivered command reports the same outcomes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Sequence

from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope
from mesh.events.bus import EventPublisher, Message, OutgoingEvent
from mesh.events.topics import COMMAND_KINDS, EventKind

log = logging.getLogger(__name__)

COMMANDS = list(dict.fromkeys(COMMAND_KINDS.values()))
ACCEPTED = frozenset({"step_command"})  # payload field names
_OUTCOME_NAMESPACE = uuid.UUID("0b3c52c4-6d0a-4c8e-9a57-3f1f0f4b7e21")


def fails(batch_id: str, step: str, essay_id: str, failure_rate: float) -> bool:
    """Whether the demo fails this essay in this step (stable across runs)."""
    digest = hashlib.sha256(f"{batch_id}\x00{step}\x00{essay_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < failure_rate


class DemoWorkers:
    """A ``mesh.events.bus.BatchHandler`` answering step commands with outcomes."""

    def __init__(
        self, publisher: EventPublisher, failure_rate: float = 0.0, delay: float = 0.0
    ) -> None:
        self._publisher = publisher
        self._failure_rate = failure_rate
        self._delay = delay

    async def __call__(self, messages: Sequence[Message]) -> None:
        outcomes: list[OutgoingEvent] = []
        for message in messages:
            command = message.envelope.step_command
            for essay in command.essays:
                outcomes.append(self._outcome(command, essay))
            log.info(
                "demo %s worker: %d essays of batch %s",
                command.step,
                len(command.essays),
                command.batch_id,
            )
        if self._delay:
            await asyncio.sleep(self._delay)  # lets a watcher see each step in progress
        await self._publisher.publish_many(outcomes)

    def _outcome(
        self, command: events_pb2.StepCommand, essay: events_pb2.EssayRef
    ) -> OutgoingEvent:
        failed = fails(command.batch_id, command.step, essay.essay_id, self._failure_rate)
        payload = events_pb2.EssayStepOutcome(
            batch_id=command.batch_id,
            step=command.step,
            essay_id=essay.essay_id,
            run_id=command.run_id,
            outcome=events_pb2.STEP_OUTCOME_FAILED if failed else events_pb2.STEP_OUTCOME_SUCCEEDED,
            error=events_pb2.ErrorDetail(code="DEMO_FAILURE", message="demo worker failed it")
            if failed
            else None,
        )
        event_id = uuid.uuid5(
            _OUTCOME_NAMESPACE, f"{command.batch_id}\x00{command.step}\x00{essay.essay_id}"
        )
        wrapped = envelope.build(
            payload, source_service=f"demo-{command.step}-worker", event_id=str(event_id)
        )
        return OutgoingEvent(EventKind.ESSAY_STEP_OUTCOME, wrapped, key=command.batch_id)
