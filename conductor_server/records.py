"""Outcome reports, from an RPC or an event, parsed into ``OutcomeRecord`` values.

``RecordStepOutcome`` requests and ``EssayStepOutcome`` events carry the same fields and obey
the same rules; ``parse_outcome`` is the one place those rules are checked (raising
``mesh.errors.InvalidArgument`` naming every bad field).
"""

from __future__ import annotations

from collections.abc import Mapping

from conductor_server.domain.model import Outcome, OutcomeRecord
from generated.huleedu.events.v1 import events_pb2
from mesh.validation import MAX_NAME_LENGTH, Violations

MAX_STORAGE_ID = 1024
MAX_ERROR_CODE = 128
MAX_ERROR_MESSAGE = 1024
MAX_ATTEMPT = 1_000_000

OUTCOME_FROM_PROTO: Mapping[int, Outcome] = {
    events_pb2.STEP_OUTCOME_SUCCEEDED: Outcome.SUCCEEDED,
    events_pb2.STEP_OUTCOME_FAILED: Outcome.FAILED,
}


def parse_outcome(
    batch_id: str,
    step: str,
    essay_id: str,
    outcome: int,
    storage_id: str,
    event_id: str,
    run_id: str = "",
    attempt: int = 0,
    error: events_pb2.ErrorDetail | None = None,
    trace: str = "",
) -> OutcomeRecord:
    """The record these fields report (attempt 0 is 1); ``InvalidArgument`` with every bad
    field. ``trace`` is the report's trace context, carried as it is."""
    v = Violations()
    v.identifier("batch_id", batch_id)
    v.identifier("step", step, MAX_NAME_LENGTH)
    v.identifier("essay_id", essay_id)
    parsed = OUTCOME_FROM_PROTO.get(outcome)
    if parsed is None:
        v.add("outcome", "must be STEP_OUTCOME_SUCCEEDED or STEP_OUTCOME_FAILED")
    if storage_id:  # optional; content-store ids may be longer than ours
        v.identifier("output_storage_id", storage_id, MAX_STORAGE_ID)
    v.optional_identifier("event_id", event_id)
    v.optional_identifier("run_id", run_id)
    if attempt > MAX_ATTEMPT:
        v.add("attempt", f"must be at most {MAX_ATTEMPT:,} (got {attempt})")
    code = error.code if error is not None else ""
    message = error.message if error is not None else ""
    v.text("error.code", code, MAX_ERROR_CODE, required=False)
    v.text("error.message", message, MAX_ERROR_MESSAGE, required=False)
    v.raise_if_any()
    assert parsed is not None
    return OutcomeRecord(
        batch_id,
        step,
        essay_id,
        parsed,
        storage_id,
        event_id,
        run_id,
        max(attempt, 1),
        code,
        message,
        trace,
    )
