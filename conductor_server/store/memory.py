"""The in-memory state store of the embedded mode: one ``BatchTally`` per batch, lost on exit.

It counts with the same rule as the PostgreSQL store (``conductor_server.domain.counting``) and
publishes each completed step's ``BatchStepCompleted`` (``conductor_server.events``) on the bus
it is given, once the call that completed it has been applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from conductor_server import events
from conductor_server.domain.counting import BatchTally, StepTable
from conductor_server.domain.model import (
    BatchRegistration,
    EssayStepResult,
    Outcome,
    OutcomeRecord,
    StepDefinition,
    StepState,
)
from conductor_server.ports import BatchState, Expired, RecordResult, Reopened
from conductor_server.store import results
from conductor_server.store.errors import (
    RegistrationConflict,
    UnknownBatch,
    check_registration,
)
from conductor_server.store.results import timed_out
from mesh.events.bus import EventPublisher, OutgoingEvent
from mesh.resource import AsyncResource


@dataclass(slots=True)
class _Batch:
    registration: BatchRegistration
    tally: BatchTally
    version: int = 1
    results: dict[tuple[str, str], EssayStepResult] = field(default_factory=dict)  # essay, step


class MemoryStateStore(AsyncResource):
    """Counts outcomes in process memory; publishes completions on ``events_out``."""

    def __init__(
        self, steps: Mapping[str, StepDefinition], events_out: EventPublisher | None = None
    ) -> None:
        self._table = StepTable(steps)
        self._events = events_out
        self._batches: dict[str, _Batch] = {}

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
        flags = {batch_id: b.registration.flags for batch_id, b in self._batches.items()}
        return await self._count(records, flags)

    async def _count(
        self, records: Sequence[OutcomeRecord], flags: Mapping[str, frozenset[str]] | None
    ) -> list[RecordResult]:
        tallies = {batch_id: batch.tally for batch_id, batch in self._batches.items()}
        answers = results.count(records, self._table, tallies, flags)
        now = datetime.now(UTC)
        for answer in answers:
            if answer.newly_recorded:
                r = answer.record
                self._batches[r.batch_id].results[r.essay_id, r.step] = EssayStepResult(
                    r.step,
                    r.outcome,
                    r.output_storage_id,
                    r.error_code,
                    r.error_message,
                    r.run_id,
                    r.attempt,
                    now,
                )
        completions = [
            self._completion(answer.record, state)
            for answer in answers
            if answer.completed_step and answer.state is not None
            for state in (answer.state, *answer.cascaded)
        ]
        if completions and self._events is not None:
            await self._events.publish_many(completions)
        return answers

    def _completion(self, record: OutcomeRecord, state: StepState) -> OutgoingEvent:
        batch = self._batches[record.batch_id]
        outcomes = batch.tally.outcomes
        succeeded = [
            (essay, batch.results[essay, state.step].output_storage_id)
            for essay in batch.registration.essay_ids
            if outcomes.get(essay, {}).get(state.step) is Outcome.SUCCEEDED
        ]
        return events.step_completed(
            record.batch_id,
            state,
            succeeded,
            record.trace,
            produces_text=self._table[state.step].produces_text,
            epoch=batch.tally.counts[state.step].epoch,
            run_id=record.run_id,
            attempt=record.attempt,
        )

    async def batch_state(self, batch_id: str) -> BatchState:
        batch = self._batch(batch_id)
        registration = batch.registration
        return BatchState(
            batch_id,
            len(registration.essay_ids),
            registration.flags,
            batch.tally.states(),
            batch.version,
        )

    async def reopen(
        self, batch_id: str, run_id: str, attempt: int, steps: Sequence[str]
    ) -> list[Reopened]:
        batch = self._batch(batch_id)
        results.known_steps(self._table, batch_id, steps)
        essays = batch.registration.essay_ids
        answers = []
        for step in steps:
            opened = batch.tally.reopen(step, run_id, attempt, essays)
            for essay in opened:
                batch.results[essay, step] = EssayStepResult(
                    step, None, run_id=run_id, attempt=attempt
                )
            answers.append(Reopened(step, tuple(opened), batch.tally.state(step)))
        return answers

    async def expire(self, batch_id: str, step: str, run_id: str, attempt: int) -> Expired:
        batch = self._batch(batch_id)
        results.known_steps(self._table, batch_id, [step])
        missing = batch.tally.missing(step, run_id, attempt, batch.registration.essay_ids)
        records = [timed_out(batch_id, step, essay, run_id, attempt) for essay in missing]
        await self._count(records, None)
        return Expired(tuple(missing), batch.tally.state(step))

    async def essay_results(
        self, batch_id: str, essay_ids: Sequence[str]
    ) -> dict[str, list[EssayStepResult]]:
        batch = self._batch(batch_id)
        return {
            essay: [
                batch.results[essay, step] for step in self._table if (essay, step) in batch.results
            ]
            for essay in essay_ids
        }

    def _batch(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise UnknownBatch(batch_id)
        return batch

    async def close(self) -> None:
        """Nothing to release; the state stays readable."""
