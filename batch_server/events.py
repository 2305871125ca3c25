"""The events the BatchService publishes, built from domain values.

Topics come from the registry (``mesh.events.topics``): a step command goes to the topic of its
``command`` (``COMMAND_KINDS``). Events a retry or redelivery could emit twice carry deterministic
ids (``batch_server.domain.identity``). Every event of a run carries the run's correlation id
(the one of the StartPipeline call), so one id traces a run from request to completion.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import duration_pb2
from google.protobuf.message import Message

from batch_server.domain import identity
from batch_server.domain.errors import UnknownCommand
from batch_server.domain.model import Batch, Dispatch, PipelineRun, RunStatus, RunSummary
from batch_server.domain.run import RunChange
from generated.huleedu.events.v1 import events_pb2 as ev
from mesh.events import envelope
from mesh.events.bus import OutgoingEvent
from mesh.events.topics import COMMAND_KINDS, EventKind
from mesh.tracing.provider import OFF, Tracing

SOURCE_SERVICE = "huleedu-batch-service"

RUN_OUTCOMES = {
    RunStatus.COMPLETED: ev.RUN_OUTCOME_COMPLETED,
    RunStatus.COMPLETED_WITH_FAILURES: ev.RUN_OUTCOME_COMPLETED_WITH_FAILURES,
    RunStatus.FAILED: ev.RUN_OUTCOME_FAILED,
    RunStatus.CANCELLED: ev.RUN_OUTCOME_CANCELLED,
}


def command_kind(step: str, command: str) -> EventKind:
    """The topic kind of a step's command; ``UnknownCommand`` when it has none."""
    kind = COMMAND_KINDS.get(command)
    if kind is None:
        raise UnknownCommand(step, command)
    return kind


def spellcheck_requested(
    essay_id: str, storage_id: str, language: str, correlation_id: str, now: datetime
) -> OutgoingEvent:
    """EssaySpellcheckRequested with the seed's fields (023 §4.1)."""
    metadata = ev.SystemMetadata(correlation_id=correlation_id)
    metadata.timestamp.FromDatetime(now)
    payload = ev.EssaySpellcheckRequested(
        entity_ref=ev.EntityRef(entity_id=essay_id, entity_type="essay"),
        status=ev.ESSAY_STATUS_PENDING_SPELLCHECK,
        system_metadata=metadata,
        text_storage_id=storage_id,
        language=language,
    )
    return _event(
        EventKind.ESSAY_SPELLCHECK_REQUESTED,
        payload,
        identity.spellcheck_requested_event_id(essay_id),
        correlation_id,
        now,
        key=essay_id,
    )


def batch_created(batch: Batch, correlation_id: str) -> OutgoingEvent:
    payload = ev.BatchCreated(batch_id=batch.batch_id, flags=dict(batch.metadata.flags))
    envelope.add_essay_refs(
        payload.essays, ((e.essay_id, e.current_storage_id) for e in batch.essays)
    )
    return _event(
        EventKind.BATCH_CREATED,
        payload,
        identity.batch_created_event_id(batch.batch_id),
        correlation_id,
        batch.created_at,
    )


def step_command(
    dispatch: Dispatch, batch: Batch, run: PipelineRun, now: datetime
) -> OutgoingEvent:
    parameters = {"pipeline": run.pipeline, "definition_version": run.definition_version}
    if batch.metadata.course_code:
        parameters["course_code"] = batch.metadata.course_code
    payload = ev.StepCommand(
        batch_id=dispatch.batch_id,
        run_id=dispatch.run_id,
        step=dispatch.step,
        command=dispatch.command,
        language=batch.metadata.language,
        parameters=parameters,
        attempt=dispatch.attempt,
    )
    envelope.add_essay_refs(payload.essays, ((e.essay_id, e.storage_id) for e in dispatch.essays))
    return _event(
        command_kind(dispatch.step, dispatch.command),
        payload,
        identity.step_command_event_id(dispatch.run_id, dispatch.step, dispatch.attempt),
        run.correlation_id,
        now,
    )


def run_completed(summary: RunSummary) -> OutgoingEvent:
    run = summary.run
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(summary.duration_seconds * 1e9))
    payload = ev.PipelineRunCompleted(
        batch_id=run.batch_id,
        run_id=run.run_id,
        pipeline=run.pipeline,
        outcome=RUN_OUTCOMES[run.status],
        completed_steps=list(run.completed_steps),
        succeeded_essay_count=summary.succeeded_essays,
        failed_essay_count=summary.failed_essays,
        duration=duration,
        attempt=run.attempt,
    )
    return _event(
        EventKind.PIPELINE_RUN_COMPLETED,
        payload,
        identity.run_completed_event_id(run.run_id, run.attempt),
        run.correlation_id,
        run.finished_at or datetime.now(UTC),
    )


def run_cancelled(run: PipelineRun) -> OutgoingEvent:
    """RunCancelled: workers drop the run's queued commands of this attempt and before."""
    payload = ev.RunCancelled(
        batch_id=run.batch_id, run_id=run.run_id, attempt=run.attempt, reason=run.cancel_reason
    )
    return _event(
        EventKind.RUN_CANCELLED,
        payload,
        identity.run_cancelled_event_id(run.run_id, run.attempt),
        run.correlation_id,
        run.finished_at or datetime.now(UTC),
    )


def for_change(
    change: RunChange, batch: Batch, now: datetime, tracing: Tracing = OFF
) -> tuple[tuple[tuple[Dispatch, OutgoingEvent], ...], tuple[OutgoingEvent, ...]]:
    """The step commands (each with its dispatch) and other events a run change causes; each
    is built inside its own ``create`` span when tracing is on (the event's cause)."""
    commands = []
    for d in change.dispatches:
        kind = command_kind(d.step, d.command)
        with tracing.creating(kind.value, _attributes(change.run, d.step, len(d.essays))):
            commands.append((d, step_command(d, batch, change.run, now)))
    others: tuple[OutgoingEvent, ...] = ()
    if change.summary is not None:
        kind, run = EventKind.PIPELINE_RUN_COMPLETED, change.run
        with tracing.creating(kind.value, _attributes(run, "", 0, run.status.value)):
            others = (run_completed(change.summary),)
            if run.status is RunStatus.CANCELLED:
                others = (run_cancelled(run), *others)
    return tuple(commands), others


def _attributes(run: PipelineRun, step: str, essays: int, status: str = "") -> dict[str, str | int]:
    found: dict[str, str | int] = {"huleedu.batch_id": run.batch_id, "huleedu.run_id": run.run_id}
    if step:
        found |= {"huleedu.step": step, "huleedu.essay_count": essays}
    if status:
        found["huleedu.run_status"] = status
    return found


def _event(
    kind: EventKind,
    payload: Message,
    event_id: str,
    correlation_id: str,
    when: datetime,
    key: str | None = None,
) -> OutgoingEvent:
    built = envelope.build(
        payload,
        source_service=SOURCE_SERVICE,
        event_id=event_id,
        correlation_id=correlation_id or None,
        timestamp=when,
    )
    return OutgoingEvent(kind, built, key)
