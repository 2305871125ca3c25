"""Conversions between BatchService protos and domain values; requests are validated here.

``x_from_proto`` parses (raising ``mesh.errors.InvalidArgument`` naming every bad field) and
``x_to_proto`` renders. The domain never sees a proto and never carries ``to_proto``.
Limits: 1 to 10,000 essays per batch, 1 MiB of text per essay; an empty language means "en".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from batch_server.control import Retried
from batch_server.domain import essays
from batch_server.domain.essays import (
    EssayCursor,
    EssayDetail,
    EssayStepResult,
    EssayTexts,
    EssayView,
    Outcome,
)
from batch_server.domain.model import (
    DEFAULT_LANGUAGE,
    UPDATABLE_FIELDS,
    Batch,
    BatchMetadata,
    BatchSummary,
    Essay,
    EssayInput,
    MetadataUpdate,
    PipelineRun,
    RunStatus,
    RunStep,
    StepStatus,
)
from batch_server.domain.paging import (
    BatchFilter,
    InvalidPageToken,
    PageCursor,
    decode_token,
    encode_token,
)
from batch_server.domain.paging import page_size as checked_page_size
from batch_server.essays import EssayPage
from batch_server.service import BatchPage, BatchStatus, RunUpdate, SpellcheckTriggered
from generated.huleedu.batch.v1 import batch_pb2 as pb
from generated.huleedu.events.v1 import events_pb2
from mesh.validation import MAX_NAME_LENGTH, Violations

MAX_ESSAYS = 10_000
MAX_TEXT_BYTES = 1024 * 1024
MAX_LABEL_BYTES = 256
MAX_REASON_BYTES = 256
MAX_RETRIED_STEPS = 100
_LANGUAGE = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")

RUN_STATUS_TO_PROTO: Mapping[RunStatus, pb.RunStatus.ValueType] = {
    RunStatus.PENDING: pb.RUN_STATUS_PENDING,
    RunStatus.RUNNING: pb.RUN_STATUS_RUNNING,
    RunStatus.COMPLETED: pb.RUN_STATUS_COMPLETED,
    RunStatus.COMPLETED_WITH_FAILURES: pb.RUN_STATUS_COMPLETED_WITH_FAILURES,
    RunStatus.FAILED: pb.RUN_STATUS_FAILED,
    RunStatus.CANCELLED: pb.RUN_STATUS_CANCELLED,
}
RUN_STATUS_FROM_PROTO = {v: k for k, v in RUN_STATUS_TO_PROTO.items()}
STEP_STATUS_TO_PROTO: Mapping[StepStatus, pb.RunStepStatus.ValueType] = {
    StepStatus.PENDING: pb.RUN_STEP_STATUS_PENDING,
    StepStatus.DISPATCHED: pb.RUN_STEP_STATUS_DISPATCHED,
    StepStatus.SATISFIED: pb.RUN_STEP_STATUS_SATISFIED,
    StepStatus.UNSATISFIED: pb.RUN_STEP_STATUS_UNSATISFIED,
    StepStatus.SKIPPED_DUE_TO_DEPENDENCY_FAILURE: (
        pb.RUN_STEP_STATUS_SKIPPED_DUE_TO_DEPENDENCY_FAILURE
    ),
    StepStatus.SKIPPED_ALREADY_SATISFIED: pb.RUN_STEP_STATUS_SKIPPED_ALREADY_SATISFIED,
    StepStatus.CANCELLED: pb.RUN_STEP_STATUS_CANCELLED,
}
STEP_STATUS_FROM_PROTO = {v: k for k, v in STEP_STATUS_TO_PROTO.items()}
ESSAY_VIEW_FROM_PROTO: Mapping[int, EssayView] = {
    pb.ESSAY_VIEW_BASIC: EssayView.BASIC,
    pb.ESSAY_VIEW_FULL: EssayView.FULL,
}
OUTCOME_TO_PROTO: Mapping[Outcome, events_pb2.StepOutcome.ValueType] = {
    Outcome.SUCCEEDED: events_pb2.STEP_OUTCOME_SUCCEEDED,
    Outcome.FAILED: events_pb2.STEP_OUTCOME_FAILED,
}
OUTCOME_FROM_PROTO = {v: k for k, v in OUTCOME_TO_PROTO.items()}


# --- requests ---------------------------------------------------------------------------


def _language(v: Violations, field: str, value: str) -> str:
    if not value:
        return DEFAULT_LANGUAGE
    if len(value) > 35 or not _LANGUAGE.match(value):
        v.add(field, "must be a BCP 47 language tag such as 'en' or 'sv-SE'")
    return value


def trigger_from_proto(request: pb.TriggerSpellcheckRequest) -> tuple[str, str]:
    """``(text, language)``."""
    v = Violations()
    text = v.text("text", request.text, MAX_TEXT_BYTES)
    language = _language(v, "language", request.language)
    v.raise_if_any()
    return text, language


def metadata_from_proto(
    v: Violations, message: pb.BatchMetadata, field: str = "metadata"
) -> BatchMetadata:
    name = v.text(f"{field}.name", message.name, MAX_LABEL_BYTES, required=False)
    course = v.text(f"{field}.course_code", message.course_code, 64, required=False)
    language = _language(v, f"{field}.language", message.language)
    flags = dict(message.flags)
    v.flags(f"{field}.flags", flags)
    labels = _labels(v, f"{field}.labels", message.labels)
    return BatchMetadata(name, course, language, flags, labels)


def _labels(v: Violations, field: str, labels: Mapping[str, str]) -> dict[str, str]:
    """Labels: keys as names, values free text of at most ``MAX_LABEL_BYTES``."""
    for key, value in labels.items():
        v.identifier(f"{field}[{key!r}]", key, MAX_NAME_LENGTH)
        v.text(f"{field}[{key!r}]", value, MAX_LABEL_BYTES, required=False)
    return dict(labels)


def create_batch_from_proto(
    request: pb.CreateBatchRequest,
) -> tuple[str, tuple[EssayInput, ...], BatchMetadata]:
    """``(request_id, essays, metadata)``; an empty request id means "no idempotency"."""
    v = Violations()
    request_id = v.optional_identifier("request_id", request.request_id)
    if not request.essays:
        v.add("essays", "must contain at least one essay")
    elif len(request.essays) > MAX_ESSAYS:
        v.add("essays", f"must contain at most {MAX_ESSAYS} essays (got {len(request.essays)})")
    essays = []
    for i, essay in enumerate(request.essays[:MAX_ESSAYS]):
        text = v.text(f"essays[{i}].text", essay.text, MAX_TEXT_BYTES)
        ref = v.text(f"essays[{i}].client_ref", essay.client_ref, MAX_LABEL_BYTES, required=False)
        essays.append(EssayInput(text, ref))
    metadata = metadata_from_proto(v, request.metadata)
    v.raise_if_any()
    return request_id, tuple(essays), metadata


def update_batch_from_proto(request: pb.UpdateBatchRequest) -> tuple[str, MetadataUpdate]:
    """``(batch_id, update)``: the metadata is checked whole, as CreateBatch's is."""
    v = Violations()
    batch_id = v.identifier("batch_id", request.batch_id)
    metadata = metadata_from_proto(v, request.metadata)
    paths = list(request.update_mask.paths)
    if not paths:
        v.add("update_mask.paths", f"must name fields to change: {', '.join(UPDATABLE_FIELDS)}")
    for i, path in enumerate(paths):
        if path not in UPDATABLE_FIELDS:
            allowed = ", ".join(UPDATABLE_FIELDS)
            v.add(f"update_mask.paths[{i}]", f"{path!r} cannot be updated (only {allowed})")
    v.raise_if_any()
    return batch_id, MetadataUpdate(frozenset(paths), metadata)


def start_from_proto(request: pb.StartPipelineRequest) -> tuple[str, str, str]:
    """``(batch_id, pipeline, request_id)``."""
    v = Violations()
    batch_id = v.identifier("batch_id", request.batch_id)
    pipeline = v.identifier("pipeline", request.pipeline, MAX_NAME_LENGTH)
    request_id = v.optional_identifier("request_id", request.request_id)
    v.raise_if_any()
    return batch_id, pipeline, request_id


def status_from_proto(request: pb.GetBatchStatusRequest) -> str:
    v = Violations()
    batch_id = v.identifier("batch_id", request.batch_id)
    v.raise_if_any()
    return batch_id


def list_from_proto(
    request: pb.ListBatchesRequest,
) -> tuple[int, PageCursor | None, BatchFilter]:
    """``(page size, cursor, filters)``; 0 means the default page size. A page token must have
    been issued for the same filters."""
    v = Violations()
    size = 0
    try:
        size = checked_page_size(request.page_size)
    except ValueError as exc:
        v.add("page_size", str(exc))
    filters = _filter_from_proto(v, request)
    cursor = None
    if request.page_token:
        try:
            cursor = decode_token(request.page_token, filters)
        except InvalidPageToken as exc:
            v.add("page_token", str(exc))
    v.raise_if_any()
    return size, cursor, filters


def _filter_from_proto(v: Violations, request: pb.ListBatchesRequest) -> BatchFilter:
    statuses: set[RunStatus | None] = set()
    for i, value in enumerate(request.latest_run_statuses):
        if value == pb.RUN_STATUS_UNSPECIFIED:
            statuses.add(None)  # batches without a run
        elif value in RUN_STATUS_FROM_PROTO:
            statuses.add(RUN_STATUS_FROM_PROTO[value])
        else:
            v.add(f"latest_run_statuses[{i}]", f"unknown run status {value}")
    labels = _labels(v, "labels", request.labels)
    after = _optional_time(v, request, "created_after")
    before = _optional_time(v, request, "created_before")
    if after is not None and before is not None and after >= before:
        v.add("created_after", "must be before created_before")
    return BatchFilter(frozenset(statuses), labels, after, before)


_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31 UTC


def _optional_time(v: Violations, message: Message, field: str) -> datetime | None:
    """The timestamp in ``message.<field>``, None when unset."""
    if not message.HasField(field):
        return None
    value: timestamp_pb2.Timestamp = getattr(message, field)
    if not (_MIN_SECONDS <= value.seconds <= _MAX_SECONDS and 0 <= value.nanos < 1_000_000_000):
        v.add(field, "must be a valid timestamp between years 1 and 9999")
        return None
    return timestamp_from_proto(value)


def cancel_from_proto(request: pb.CancelRunRequest) -> tuple[str, str, str]:
    """``(batch_id, run_id, reason)``."""
    v = Violations()
    batch_id = v.identifier("batch_id", request.batch_id)
    run_id = v.identifier("run_id", request.run_id)
    reason = v.text("reason", request.reason, MAX_REASON_BYTES, required=False)
    v.raise_if_any()
    return batch_id, run_id, reason


def retry_from_proto(request: pb.RetryRunRequest) -> tuple[str, str, tuple[str, ...], str]:
    """``(batch_id, run_id, steps, request_id)``."""
    v = Violations()
    batch_id = v.identifier("batch_id", request.batch_id)
    run_id = v.identifier("run_id", request.run_id)
    steps = tuple(request.steps)
    if len(steps) > MAX_RETRIED_STEPS:
        v.add("steps", f"must name at most {MAX_RETRIED_STEPS} steps (got {len(steps)})")
    for index, step in enumerate(steps[:MAX_RETRIED_STEPS]):
        v.identifier(f"steps[{index}]", step, MAX_NAME_LENGTH)
        if step in steps[:index]:
            v.add(f"steps[{index}]", f"repeats step {step!r}")
    request_id = v.optional_identifier("request_id", request.request_id)
    v.raise_if_any()
    return batch_id, run_id, steps, request_id


def watch_from_proto(request: pb.WatchBatchRequest) -> tuple[str, str]:
    """``(batch_id, run_id)``; an empty run id means the newest run."""
    v = Violations()
    batch_id = v.identifier("batch_id", request.batch_id)
    run_id = v.optional_identifier("run_id", request.run_id)
    v.raise_if_any()
    return batch_id, run_id


def get_essay_from_proto(request: pb.GetEssayRequest) -> tuple[str, str, EssayView]:
    """``(essay_id, batch_id, view)``; an empty batch id means "any batch or none"."""
    v = Violations()
    essay_id = v.identifier("essay_id", request.essay_id)
    batch_id = v.optional_identifier("batch_id", request.batch_id)
    view = _view(v, request.view, EssayView.FULL)
    v.raise_if_any()
    return essay_id, batch_id, view


def list_essays_from_proto(
    request: pb.ListEssaysRequest,
) -> tuple[str, int, EssayCursor | None, EssayView]:
    """``(batch_id, page size, cursor, view)``; page size 0 means the default."""
    v = Violations()
    batch_id = v.identifier("batch_id", request.batch_id)
    size = 0
    try:
        size = checked_page_size(request.page_size, essays.DEFAULT_PAGE_SIZE, essays.MAX_PAGE_SIZE)
    except ValueError as exc:
        v.add("page_size", str(exc))
    cursor = None
    if request.page_token:
        try:
            cursor = essays.decode_token(request.page_token, batch_id)
        except InvalidPageToken as exc:
            v.add("page_token", str(exc))
    view = _view(v, request.view, EssayView.BASIC)
    v.raise_if_any()
    return batch_id, size, cursor, view


def _view(v: Violations, value: int, default: EssayView) -> EssayView:
    if value == pb.ESSAY_VIEW_UNSPECIFIED:
        return default
    view = ESSAY_VIEW_FROM_PROTO.get(value)
    if view is None:
        v.add("view", f"must be ESSAY_VIEW_BASIC or ESSAY_VIEW_FULL (got {value})")
        return default
    return view


# --- values -----------------------------------------------------------------------------


def timestamp_to_proto(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def timestamp_from_proto(value: timestamp_pb2.Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def metadata_to_proto(metadata: BatchMetadata) -> pb.BatchMetadata:
    return pb.BatchMetadata(
        name=metadata.name,
        course_code=metadata.course_code,
        language=metadata.language,
        flags=dict(metadata.flags),
        labels=dict(metadata.labels),
    )


def batch_to_proto(batch: Batch) -> pb.Batch:
    return pb.Batch(
        batch_id=batch.batch_id,
        essays=[
            pb.Essay(
                essay_id=e.essay_id,
                client_ref=e.client_ref,
                original_storage_id=e.original_storage_id,
                current_storage_id=e.current_storage_id,
            )
            for e in batch.essays
        ],
        metadata=metadata_to_proto(batch.metadata),
        created_at=timestamp_to_proto(batch.created_at),
    )


def batch_from_proto(message: pb.Batch) -> Batch:
    """A batch as rendered by ``batch_to_proto`` (for clients and tests; not validated)."""
    m = message.metadata
    return Batch(
        message.batch_id,
        tuple(
            Essay(e.essay_id, e.client_ref, e.original_storage_id, e.current_storage_id)
            for e in message.essays
        ),
        BatchMetadata(m.name, m.course_code, m.language, dict(m.flags), dict(m.labels)),
        timestamp_from_proto(message.created_at),
    )


def run_to_proto(run: PipelineRun) -> pb.PipelineRun:
    message = pb.PipelineRun(
        run_id=run.run_id,
        batch_id=run.batch_id,
        pipeline=run.pipeline,
        status=RUN_STATUS_TO_PROTO[run.status],
        definition_version=run.definition_version,
        steps=[_run_step_to_proto(s) for s in run.steps],
        created_at=timestamp_to_proto(run.created_at),
        attempt=run.attempt,
        cancel_reason=run.cancel_reason,
    )
    if run.finished_at is not None:
        message.finished_at.CopyFrom(timestamp_to_proto(run.finished_at))
    return message


def _run_step_to_proto(step: RunStep) -> pb.RunStep:
    message = pb.RunStep(
        step=step.name,
        status=STEP_STATUS_TO_PROTO[step.status],
        succeeded=step.succeeded,
        failed=step.failed,
        total=step.total,
        attempt=step.attempt,
        timed_out=step.timed_out,
    )
    if step.deadline is not None:
        message.deadline.CopyFrom(timestamp_to_proto(step.deadline))
    return message


def run_from_proto(message: pb.PipelineRun) -> PipelineRun:
    """A run as rendered by ``run_to_proto`` (fields the proto lacks keep their defaults)."""
    return PipelineRun(
        run_id=message.run_id,
        batch_id=message.batch_id,
        pipeline=message.pipeline,
        status=RUN_STATUS_FROM_PROTO[message.status],
        definition_version=message.definition_version,
        steps=tuple(
            RunStep(
                s.step,
                "",
                (),
                STEP_STATUS_FROM_PROTO[s.status],
                s.succeeded,
                s.failed,
                s.total,
                attempt=s.attempt,
                deadline=timestamp_from_proto(s.deadline) if s.HasField("deadline") else None,
                timed_out=s.timed_out,
            )
            for s in message.steps
        ),
        created_at=timestamp_from_proto(message.created_at),
        finished_at=(
            timestamp_from_proto(message.finished_at) if message.HasField("finished_at") else None
        ),
        attempt=message.attempt or 1,
        cancel_reason=message.cancel_reason,
    )


def summary_to_proto(summary: BatchSummary) -> pb.BatchSummary:
    latest = summary.latest_run_status
    return pb.BatchSummary(
        batch_id=summary.batch_id,
        name=summary.name,
        essay_count=summary.essay_count,
        created_at=timestamp_to_proto(summary.created_at),
        latest_run_status=(
            RUN_STATUS_TO_PROTO[latest] if latest is not None else pb.RUN_STATUS_UNSPECIFIED
        ),
        labels=dict(summary.labels),
    )


# --- responses --------------------------------------------------------------------------


def trigger_to_proto(result: SpellcheckTriggered) -> pb.TriggerSpellcheckResponse:
    return pb.TriggerSpellcheckResponse(
        essay_id=result.essay_id,
        correlation_id=result.correlation_id,
        text_storage_id=result.storage_id,
    )


def create_batch_to_proto(batch: Batch) -> pb.CreateBatchResponse:
    return pb.CreateBatchResponse(batch=batch_to_proto(batch))


def update_batch_to_proto(batch: Batch) -> pb.UpdateBatchResponse:
    return pb.UpdateBatchResponse(batch=batch_to_proto(batch))


def start_to_proto(run: PipelineRun) -> pb.StartPipelineResponse:
    pruned = run.pruned_steps
    return pb.StartPipelineResponse(
        run=run_to_proto(run),
        steps=list(run.planned_steps),
        pruned_steps=list(pruned),
        pruned_reasons=[events_pb2.SKIP_REASON_ALREADY_SATISFIED] * len(pruned),
    )


def status_to_proto(status: BatchStatus) -> pb.GetBatchStatusResponse:
    return pb.GetBatchStatusResponse(
        batch=batch_to_proto(status.batch), runs=[run_to_proto(r) for r in status.runs]
    )


def page_to_proto(page: BatchPage, filters: BatchFilter) -> pb.ListBatchesResponse:
    return pb.ListBatchesResponse(
        batches=[summary_to_proto(s) for s in page.batches],
        next_page_token=encode_token(page.next_cursor, filters) if page.next_cursor else "",
    )


def cancel_to_proto(run: PipelineRun) -> pb.CancelRunResponse:
    return pb.CancelRunResponse(run=run_to_proto(run))


def retry_to_proto(retried: Retried) -> pb.RetryRunResponse:
    return pb.RetryRunResponse(
        run=run_to_proto(retried.run),
        retried_steps=[pb.RetriedStep(step=s, essay_count=n) for s, n in retried.steps],
    )


def update_to_proto(update: RunUpdate, sequence: int) -> pb.WatchBatchResponse:
    return pb.WatchBatchResponse(
        run=run_to_proto(update.run), changed_step=update.changed_step, sequence=sequence
    )


def step_result_to_proto(result: EssayStepResult) -> pb.EssayStepResult:
    message = pb.EssayStepResult(
        step=result.step,
        outcome=OUTCOME_TO_PROTO[result.outcome]
        if result.outcome is not None
        else events_pb2.STEP_OUTCOME_UNSPECIFIED,
        output_storage_id=result.output_storage_id,
        attempt=result.attempt,
        run_id=result.run_id,
    )
    if result.error_code or result.error_message:
        message.error.code = result.error_code
        message.error.message = result.error_message
    return message


def essay_detail_to_proto(detail: EssayDetail) -> pb.EssayDetail:
    essay = detail.essay
    message = pb.EssayDetail(
        essay_id=essay.essay_id,
        batch_id=detail.batch_id,
        client_ref=essay.client_ref,
        original_storage_id=essay.original_storage_id,
        current_storage_id=essay.current_storage_id,
        steps=[step_result_to_proto(r) for r in detail.steps],
    )
    if detail.texts is not None:
        message.original_text = detail.texts.original
        message.current_text = detail.texts.current
    return message


def essay_detail_from_proto(message: pb.EssayDetail, view: EssayView) -> EssayDetail:
    """An essay as rendered by ``essay_detail_to_proto`` in ``view`` (for tests; not
    validated)."""
    steps = tuple(
        EssayStepResult(
            r.step,
            OUTCOME_FROM_PROTO.get(r.outcome),
            r.error.code,
            r.error.message,
            r.output_storage_id,
            r.attempt,
            r.run_id,
        )
        for r in message.steps
    )
    essay = Essay(
        message.essay_id,
        message.client_ref,
        message.original_storage_id,
        message.current_storage_id,
    )
    texts = (
        EssayTexts(message.original_text, message.current_text) if view is EssayView.FULL else None
    )
    return EssayDetail(message.batch_id, essay, steps, texts)


def essay_to_proto(detail: EssayDetail) -> pb.GetEssayResponse:
    return pb.GetEssayResponse(essay=essay_detail_to_proto(detail))


def essay_page_to_proto(page: EssayPage) -> pb.ListEssaysResponse:
    return pb.ListEssaysResponse(
        essays=[essay_detail_to_proto(e) for e in page.essays],
        next_page_token=essays.encode_token(page.next_cursor) if page.next_cursor else "",
    )
