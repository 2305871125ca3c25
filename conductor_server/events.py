"""The events the conductor emits, built in one place for every mode.

``BatchStepCompleted`` has a deterministic event id (``completion_event_id``, a uuid5 of batch,
step and the step's epoch): a step completes once per epoch (``domain.counting``: a retry that
reopens it starts the next), so however many times a completion is written (a replayed
outcome, a crash between writes, the outbox relay retrying) consumers see one id and drop the
repeats. The in-memory store publishes it on the bus; the PostgreSQL store writes it to
the outbox in the transaction that counted the step's last outcome.

Its succeeded essays carry their output storage id as ``text_storage_id`` only when the step
produces text (``StepDefinition.produces_text``), so the BatchService's rule, "an essay's latest
text is the output of the last step that produced one", holds without the BatchService knowing
step definitions: an analysis step's output is a result, never the text the next step reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from conductor_server.domain.model import StepState, StepStatus
from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope
from mesh.events.bus import OutgoingEvent
from mesh.events.topics import EventKind
from mesh.tracing import propagation

SOURCE_SERVICE = "huleedu-pipeline-conductor"
_COMPLETION_NAMESPACE = uuid.UUID("5b0c7f5e-8f52-4c55-9d7e-2f1d8f0c6a11")


def completion_event_id(batch_id: str, step: str, epoch: int = 1) -> str:
    """The id of the one ``BatchStepCompleted`` event of ``step`` of ``batch_id`` in ``epoch``."""
    suffix = "completed" if epoch == 1 else f"completed\x00{epoch}"
    return str(uuid.uuid5(_COMPLETION_NAMESPACE, f"{batch_id}\x00{step}\x00{suffix}"))


def step_completed(
    batch_id: str,
    state: StepState,
    succeeded_essays: Sequence[tuple[str, str]],
    trace: str = "",
    *,
    produces_text: bool,
    epoch: int = 1,
    run_id: str = "",
    attempt: int = 1,
) -> OutgoingEvent:
    """``BatchStepCompleted`` for a complete ``state`` in the step's ``epoch``, completed by an
    outcome (or a timeout) of ``run_id``'s ``attempt``; essays are ``(essay_id, output_id)`` in
    batch order, and an output is the essay's new text only when the step ``produces_text``.
    ``trace``: the trace context of the outcome that completed the step (by default the current
    one)."""
    payload = events_pb2.BatchStepCompleted(
        batch_id=batch_id,
        step=state.step,
        succeeded=state.succeeded,
        failed=state.failed,
        total=state.total,
        satisfied=state.status is StepStatus.SATISFIED,
        run_id=run_id,
        attempt=attempt,
        timed_out=state.timed_out,
    )
    envelope.add_essay_refs(
        payload.succeeded_essays,
        succeeded_essays if produces_text else ((essay, "") for essay, _ in succeeded_essays),
    )
    wrapped = envelope.build(
        payload,
        source_service=SOURCE_SERVICE,
        event_id=completion_event_id(batch_id, state.step, epoch),
    )
    return OutgoingEvent(
        EventKind.BATCH_STEP_COMPLETED, wrapped, key=batch_id, trace=trace or propagation.current()
    )


def phase_skipped(batch_id: str, step: str, target: str) -> OutgoingEvent:
    """``PhaseSkipped``: each resolution that prunes a step is its own fact (fresh id)."""
    payload = events_pb2.PhaseSkipped(
        batch_id=batch_id,
        step=step,
        reason=events_pb2.SKIP_REASON_ALREADY_SATISFIED,
        target=target,
    )
    wrapped = envelope.build(payload, source_service=SOURCE_SERVICE)
    return OutgoingEvent(EventKind.PHASE_SKIPPED, wrapped, key=batch_id)
