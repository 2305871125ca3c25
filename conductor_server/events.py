"""The events the conductor emits, built in one place for every mode.

``BatchStepCompleted`` has a deterministic event id (``completion_event_id``, a uuid5 of batch
and step): a step completes once per batch, so however many times the completion is written
(a replayed outcome, a crash between writes, the outbox relay retrying) consumers see one id and
drop the repeats. The in-memory store publishes it on the bus; the PostgreSQL store writes it to
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

SOURCE_SERVICE = "huleedu-pipeline-conductor"
_COMPLETION_NAMESPACE = uuid.UUID("5b0c7f5e-8f52-4c55-9d7e-2f1d8f0c6a11")


def completion_event_id(batch_id: str, step: str) -> str:
    """The id of the one ``BatchStepCompleted`` event of ``step`` of ``batch_id``."""
    return str(uuid.uuid5(_COMPLETION_NAMESPACE, f"{batch_id}\x00{step}\x00completed"))


def step_completed(
    batch_id: str,
    state: StepState,
    succeeded_essays: Sequence[tuple[str, str]],
    *,
    produces_text: bool,
) -> OutgoingEvent:
    """``BatchStepCompleted`` for a complete ``state``; essays are ``(essay_id, output_id)`` in
    batch order, and an output is the essay's new text only when the step ``produces_text``."""
    payload = events_pb2.BatchStepCompleted(
        batch_id=batch_id,
        step=state.step,
        succeeded=state.succeeded,
        failed=state.failed,
        total=state.total,
        satisfied=state.status is StepStatus.SATISFIED,
        succeeded_essays=[
            events_pb2.EssayRef(essay_id=essay, text_storage_id=output if produces_text else "")
            for essay, output in succeeded_essays
        ],
    )
    wrapped = envelope.build(
        payload,
        source_service=SOURCE_SERVICE,
        event_id=completion_event_id(batch_id, state.step),
    )
    return OutgoingEvent(EventKind.BATCH_STEP_COMPLETED, wrapped, key=batch_id)


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
