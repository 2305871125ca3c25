"""Counting a call's records on their batches' tallies, answered the same way by every store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from conductor_server.domain.counting import BatchTally, StepTable, Verdict
from conductor_server.domain.model import TIMED_OUT_CODE, Outcome, OutcomeRecord, StepState
from conductor_server.ports import RecordResult
from conductor_server.store.errors import (
    ConflictingOutcome,
    EssayNotExpected,
    StepNotAllowed,
    UnknownBatch,
    UnknownStep,
)


def count(
    records: Sequence[OutcomeRecord],
    table: StepTable,
    tallies: Mapping[str, BatchTally],
    flags: Mapping[str, frozenset[str]] | None,
) -> list[RecordResult]:
    """Count each record, in order, on the tally of its batch (whose flags are ``flags``); one
    result per record.

    A record of a step the table does not have is refused before its batch is looked up; one of
    a step that requires a flag the batch does not have is refused like a dispatch would be
    (``flags`` None: no such check, for the timeouts the conductor records itself). The
    ``state`` of a result is its step's state once the whole call is counted (for the record
    that completed a step, its final state), built once per step and call.
    """
    states: dict[tuple[str, str], StepState] = {}
    answers: list[RecordResult] = []
    definitions = table.definitions
    for record in records:
        batch_id, step = record.batch_id, record.step
        definition = definitions.get(step)
        if definition is None:
            answers.append(RecordResult(record, error=UnknownStep(batch_id, step)))
            continue
        tally = tallies.get(batch_id)
        if tally is None:
            answers.append(RecordResult(record, error=UnknownBatch(batch_id)))
            continue
        requires = definition.requires
        if requires and flags is not None:
            missing = [flag for flag in requires if flag not in flags[batch_id]]
            if missing:
                answers.append(RecordResult(record, error=StepNotAllowed(batch_id, step, missing)))
                continue
        entry = tally.record(step, record.essay_id, record.outcome, record.run_id, record.attempt)
        verdict = entry.verdict
        if verdict is Verdict.NOT_EXPECTED:
            answers.append(
                RecordResult(record, error=EssayNotExpected(batch_id, step, record.essay_id))
            )
        elif verdict is Verdict.CONFLICT:
            assert entry.previous is not None
            conflict = ConflictingOutcome(
                batch_id, step, record.essay_id, entry.previous, record.outcome
            )
            answers.append(RecordResult(record, error=conflict))
        else:
            # positional (record, newly_recorded, completed_step, state, cascaded, error,
            # verdict): this runs for every counted outcome
            cascaded = tuple(map(tally.state, entry.cascaded)) if entry.cascaded else ()
            answers.append(
                RecordResult(
                    record,
                    verdict is Verdict.RECORDED,
                    entry.completed,
                    None,
                    cascaded,
                    None,
                    verdict,
                )
            )
    for answer in answers:
        if answer.error is None:
            record = answer.record
            key = (record.batch_id, record.step)
            state = states.get(key)
            if state is None:
                state = states[key] = tallies[key[0]].state(key[1])
            answer.state = state
    return answers


def timed_out(batch_id: str, step: str, essay_id: str, run_id: str, attempt: int) -> OutcomeRecord:
    """The outcome the conductor records for an essay whose step timed out."""
    return OutcomeRecord(
        batch_id,
        step,
        essay_id,
        Outcome.TIMED_OUT,
        run_id=run_id,
        attempt=attempt,
        error_code=TIMED_OUT_CODE,
        error_message="the step's timeout expired before the essay's outcome arrived",
    )


def known_steps(table: StepTable, batch_id: str, steps: Sequence[str]) -> None:
    """Raise ``UnknownStep`` for the first of ``steps`` the table does not have."""
    for step in steps:
        if step not in table:
            raise UnknownStep(batch_id, step)
