"""The answer for one record, the same from every store: a counting ``Entry`` becomes a
``RecordResult`` (with the state store's error for a refusal)."""

from __future__ import annotations

from conductor_server.domain.counting import BatchTally, Entry, Verdict
from conductor_server.domain.model import OutcomeRecord
from conductor_server.ports import RecordResult
from conductor_server.store.errors import (
    ConflictingOutcome,
    EssayNotExpected,
    UnknownBatch,
    UnknownStep,
)


def result(record: OutcomeRecord, entry: Entry, tally: BatchTally) -> RecordResult:
    """What recording ``record`` in ``tally`` did, as the state stores answer it."""
    if entry.verdict is Verdict.NOT_EXPECTED:
        error = EssayNotExpected(record.batch_id, record.step, record.essay_id)
        return RecordResult(record, error=error)
    if entry.verdict is Verdict.CONFLICT:
        assert entry.previous is not None
        conflict = ConflictingOutcome(
            record.batch_id, record.step, record.essay_id, entry.previous, record.outcome
        )
        return RecordResult(record, error=conflict)
    return RecordResult(
        record,
        newly_recorded=entry.verdict is Verdict.RECORDED,
        completed_step=entry.completed,
        state=tally.state(record.step),
        cascaded=tuple(tally.state(name) for name in entry.cascaded) if entry.cascaded else (),
    )


def unknown_step(record: OutcomeRecord) -> RecordResult:
    return RecordResult(record, error=UnknownStep(record.batch_id, record.step))


def unknown_batch(record: OutcomeRecord) -> RecordResult:
    return RecordResult(record, error=UnknownBatch(record.batch_id))
