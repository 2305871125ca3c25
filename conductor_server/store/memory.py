"""The in-memory state store of the embedded mode: one ``BatchTally`` per batch, lost on exit.

It counts with the same rule as the PostgreSQL store (``conductor_server.domain.counting``) and
publishes each completed step's ``BatchStepCompleted`` (``conductor_server.events``) on the bus
it is given, once the call that completed it has been applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from conductor_server import events
from conductor_server.domain.counting import BatchTally, StepTable
from conductor_server.domain.model import (
    BatchRegistration,
    Outcome,
    OutcomeRecord,
    StepDefinition,
    StepState,
)
from conductor_server.ports import BatchState, RecordResult
from conductor_server.store import results
from conductor_server.store.errors import RegistrationConflict, UnknownBatch, check_registration
from mesh.events.bus import EventPublisher, OutgoingEvent
from mesh.resource import AsyncResource


@dataclass(slots=True)
class _Batch:
    registration: BatchRegistration
    tally: BatchTally
    version: int = 1


class MemoryStateStore(AsyncResource):
    """Counts outcomes in process memory; publishes completions on ``events_out``."""

    def __init__(
        self, steps: Mapping[str, StepDefinition], events_out: EventPublisher | None = None
    ) -> None:
        self._table = StepTable(steps)
        self._events = events_out
        self._batches: dict[str, _Batch] = {}
        self._outputs: dict[tuple[str, str, str], str] = {}  # (batch, step, essay) -> storage id

    async def register_batch(self, registration: BatchRegistration) -> bool:
        check_registration(registration)
        known = self._batches.get(registration.batch_id)
        if known is None:
            essays = registration.essay_ids
            counts = self._table.initial_counts(len(essays))
            tally = BatchTally(self._table, counts, {}, frozenset(essays))
            self._batches[registration.batch_id] = _Batch(registration, tally)
            return True
        if set(known.registration.essay_ids) != set(registration.essay_ids):
            raise RegistrationConflict(registration.batch_id)
        if known.registration.flags != registration.flags:
            known.registration = BatchRegistration(
                registration.batch_id, known.registration.essay_ids, registration.flags
            )
            known.version += 1
        return False

    async def record_outcomes(self, records: Sequence[OutcomeRecord]) -> list[RecordResult]:
        tallies = {batch_id: batch.tally for batch_id, batch in self._batches.items()}
        answers = results.count(records, self._table, tallies)
        for answer in answers:
            record = answer.record
            if answer.newly_recorded and record.output_storage_id:
                key = (record.batch_id, record.step, record.essay_id)
                self._outputs[key] = record.output_storage_id
        completions = [
            self._completion(answer.record.batch_id, state)
            for answer in answers
            if answer.completed_step and answer.state is not None
            for state in (answer.state, *answer.cascaded)
        ]
        if completions and self._events is not None:
            await self._events.publish_many(completions)
        return answers

    def _completion(self, batch_id: str, state: StepState) -> OutgoingEvent:
        batch = self._batches[batch_id]
        outcomes = batch.tally.outcomes
        succeeded = [
            (essay, self._outputs.get((batch_id, state.step, essay), ""))
            for essay in batch.registration.essay_ids
            if outcomes.get(essay, {}).get(state.step) is Outcome.SUCCEEDED
        ]
        produces_text = self._table[state.step].produces_text
        return events.step_completed(batch_id, state, succeeded, produces_text=produces_text)

    async def batch_state(self, batch_id: str) -> BatchState:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise UnknownBatch(batch_id)
        registration = batch.registration
        return BatchState(
            batch_id,
            len(registration.essay_ids),
            registration.flags,
            batch.tally.states(),
            batch.version,
        )

    async def close(self) -> None:
        """Nothing to release; the state stays readable."""
