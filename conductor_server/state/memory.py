"""The in-memory state store: embedded mode and the fake for service tests.

Same semantics as the real stores (one contract suite runs against all of them); state lives in
one ``BatchLedger`` per batch and is lost when the process ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from conductor_server.domain.model import (
    BatchRegistration,
    Outcome,
    OutcomeRecord,
    StepDefinition,
)
from conductor_server.state.errors import (
    ConflictingOutcome,
    EssayNotExpected,
    RegistrationConflict,
    UnknownBatch,
    UnknownStep,
)
from conductor_server.state.ledger import BatchLedger, Verdict, check_registration
from conductor_server.state.protocol import BatchState, RecordResult
from conductor_server.state.steps import StepTable
from mesh.resource import AsyncResource


class MemoryStateStore(AsyncResource):
    """Counts outcomes in process memory."""

    def __init__(self, steps: Mapping[str, StepDefinition]) -> None:
        self._table = StepTable(steps)
        self._batches: dict[str, BatchLedger] = {}
        self._outputs: dict[tuple[str, str, str], str] = {}  # (batch, step, essay) -> storage id

    async def register_batch(self, registration: BatchRegistration) -> bool:
        check_registration(registration)
        ledger = self._batches.get(registration.batch_id)
        if ledger is None:
            self._batches[registration.batch_id] = BatchLedger(self._table, registration)
            return True
        if set(ledger.registration.essay_ids) != set(registration.essay_ids):
            raise RegistrationConflict(registration.batch_id)
        ledger.registration = BatchRegistration(
            registration.batch_id, ledger.registration.essay_ids, registration.flags
        )
        return False

    async def record_outcomes(self, records: Sequence[OutcomeRecord]) -> list[RecordResult]:
        return [self._record(record) for record in records]

    def _record(self, record: OutcomeRecord) -> RecordResult:
        if record.step not in self._table:
            return RecordResult(record, error=UnknownStep(record.batch_id, record.step))
        ledger = self._batches.get(record.batch_id)
        if ledger is None:
            return RecordResult(record, error=UnknownBatch(record.batch_id))
        entry = ledger.record(record.step, record.essay_id, record.outcome)
        if entry.verdict is Verdict.NOT_EXPECTED:
            error = EssayNotExpected(record.batch_id, record.step, record.essay_id)
            return RecordResult(record, error=error)
        if entry.verdict is Verdict.CONFLICT:
            assert entry.previous is not None
            conflict = ConflictingOutcome(
                record.batch_id, record.step, record.essay_id, entry.previous, record.outcome
            )
            return RecordResult(record, error=conflict)
        if entry.verdict is Verdict.RECORDED and record.output_storage_id:
            self._outputs[record.batch_id, record.step, record.essay_id] = record.output_storage_id
        return RecordResult(
            record,
            newly_recorded=entry.verdict is Verdict.RECORDED,
            completed_step=entry.completed,
            state=ledger.state(record.step),
            cascaded=tuple(ledger.state(name) for name in entry.cascaded),
        )

    def succeeded_essays(self, batch_id: str, step: str) -> list[tuple[str, str]]:
        """``(essay_id, output_storage_id)`` of the essays that succeeded in ``step``, in batch
        order (what ``BatchStepCompleted`` carries; PostgreSQL builds the same list in SQL)."""
        ledger = self._batches[batch_id]
        outcomes = ledger.outcomes[step]
        return [
            (essay, self._outputs.get((batch_id, step, essay), ""))
            for essay in ledger.registration.essay_ids
            if outcomes.get(essay) is Outcome.SUCCEEDED
        ]

    async def batch_state(self, batch_id: str) -> BatchState:
        ledger = self._batches.get(batch_id)
        if ledger is None:
            raise UnknownBatch(batch_id)
        return BatchState(ledger.registration, ledger.states())

    async def close(self) -> None:
        """Nothing to release; the state stays readable."""
