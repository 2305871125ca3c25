"""Counting a call's records on their batches' tallies, answered the same way by every store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from conductor_server.domain.counting import BatchTally, StepTable, Verdict
from conductor_server.domain.model import OutcomeRecord, StepState
from conductor_server.ports import RecordResult
from conductor_server.store.errors import (
    ConflictingOutcome,
    EssayNotExpected,
    UnknownBatch,
    UnknownStep,
)


def count(
    records: Sequence[OutcomeRecord], table: StepTable, tallies: Mapping[str, BatchTally]
) -> list[RecordResult]:
    """Count each record, in order, on the tally of its batch; one result per record.

    A record of a step the table does not have is refused before its batch is looked up. The
    ``state`` of a result is its step's state once the whole call is counted (for the record
    that completed a step, its final state), built once per step and call.
    """
    states: dict[tuple[str, str], StepState] = {}
    answers: list[RecordResult] = []
    for record in records:
        batch_id, step = record.batch_id, record.step
        if step not in table:
            answers.append(RecordResult(record, error=UnknownStep(batch_id, step)))
            continue
        tally = tallies.get(batch_id)
        if tally is None:
            answers.append(RecordResult(record, error=UnknownBatch(batch_id)))
            continue
        entry = tally.record(step, record.essay_id, record.outcome)
        if entry.verdict is Verdict.NOT_EXPECTED:
            answers.append(
                RecordResult(record, error=EssayNotExpected(batch_id, step, record.essay_id))
            )
        elif entry.verdict is Verdict.CONFLICT:
            assert entry.previous is not None
            conflict = ConflictingOutcome(
                batch_id, step, record.essay_id, entry.previous, record.outcome
            )
            answers.append(RecordResult(record, error=conflict))
        else:
            cascaded = tuple(tally.state(name) for name in entry.cascaded)
            answers.append(
                RecordResult(
                    record,
                    newly_recorded=entry.verdict is Verdict.RECORDED,
                    completed_step=entry.completed,
                    cascaded=cascaded,
                )
            )
    for answer in answers:
        if answer.error is None:
            key = (answer.record.batch_id, answer.record.step)
            state = states.get(key)
            if state is None:
                state = states[key] = tallies[key[0]].state(key[1])
            answer.state = state
    return answers
