"""Conversions between conductor protos and domain values; requests are validated here.

``x_from_proto`` parses (raising ``mesh.errors.InvalidArgument`` with every bad field) and
``x_to_proto`` renders. The domain never sees a proto and never carries ``to_proto``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from conductor_server.domain.catalog import PipelineCatalog
from conductor_server.domain.counting import Verdict
from conductor_server.domain.model import (
    EssayStepResult,
    Outcome,
    OutcomeRecord,
    PipelineDefinition,
    StepDefinition,
    StepState,
    StepStatus,
)
from conductor_server.domain.resolution import Resolution
from conductor_server.ports import BatchState, Expired, RecordResult, Reopened
from conductor_server.records import MAX_ATTEMPT, parse_outcome
from generated.huleedu.conductor.v1 import conductor_pb2 as pb
from generated.huleedu.events.v1 import events_pb2
from mesh.validation import MAX_NAME_LENGTH, Violations

MAX_ESSAYS_PER_BATCH = 100_000
MAX_REOPENED_STEPS = 100
MAX_ESSAYS_PER_READ = 1_000

VERDICT_TO_PROTO: Mapping[Verdict, pb.OutcomeVerdict.ValueType] = {
    Verdict.RECORDED: pb.OUTCOME_VERDICT_RECORDED,
    Verdict.DUPLICATE: pb.OUTCOME_VERDICT_DUPLICATE,
    Verdict.SUPERSEDED: pb.OUTCOME_VERDICT_SUPERSEDED,
    Verdict.LATE: pb.OUTCOME_VERDICT_LATE,
}
OUTCOME_TO_PROTO: Mapping[Outcome, events_pb2.StepOutcome.ValueType] = {
    Outcome.SUCCEEDED: events_pb2.STEP_OUTCOME_SUCCEEDED,
    Outcome.FAILED: events_pb2.STEP_OUTCOME_FAILED,
    Outcome.TIMED_OUT: events_pb2.STEP_OUTCOME_FAILED,  # a failure, with error code TIMED_OUT
}

STATUS_TO_PROTO: Mapping[StepStatus, pb.StepStatus.ValueType] = {
    StepStatus.WAITING: pb.STEP_STATUS_WAITING,
    StepStatus.NOT_STARTED: pb.STEP_STATUS_NOT_STARTED,
    StepStatus.IN_PROGRESS: pb.STEP_STATUS_IN_PROGRESS,
    StepStatus.SATISFIED: pb.STEP_STATUS_SATISFIED,
    StepStatus.UNSATISFIED: pb.STEP_STATUS_UNSATISFIED,
    StepStatus.BLOCKED: pb.STEP_STATUS_BLOCKED,
}


def registration_from_proto(
    request: pb.RegisterBatchRequest,
) -> tuple[str, tuple[str, ...], dict[str, bool]]:
    """``(batch_id, essay_ids, flags)``."""
    v = Violations()
    batch_id = v.identifier("batch_id", request.batch_id)
    essays = v.identifiers("essay_ids", request.essay_ids, MAX_ESSAYS_PER_BATCH)
    flags = dict(request.flags)
    v.flags("flags", flags)
    v.raise_if_any()
    return batch_id, essays, flags


def resolve_from_proto(request: pb.ResolvePipelineRequest) -> tuple[str, str, dict[str, bool]]:
    """``(batch_id, target, flag overrides)``."""
    return _named_request(request.batch_id, "target", request.target, request.flags)


def prerequisites_from_proto(
    request: pb.ValidatePrerequisitesRequest,
) -> tuple[str, str, dict[str, bool]]:
    """``(batch_id, step, flag overrides)``."""
    return _named_request(request.batch_id, "step", request.step, request.flags)


def _named_request(
    batch_id: str, field: str, name: str, flags: Mapping[str, bool]
) -> tuple[str, str, dict[str, bool]]:
    """A batch id, a pipeline or step name in ``field``, and flag overrides, validated."""
    v = Violations()
    v.identifier("batch_id", batch_id)
    v.identifier(field, name, MAX_NAME_LENGTH)
    overrides = dict(flags) if flags else {}
    v.flags("flags", overrides)
    v.raise_if_any()
    return batch_id, name, overrides


def outcome_from_proto(request: pb.RecordStepOutcomeRequest) -> OutcomeRecord:
    return parse_outcome(
        request.batch_id,
        request.step,
        request.essay_id,
        request.outcome,
        request.output_storage_id,
        request.event_id,
        request.run_id,
        request.attempt,
        request.error if request.HasField("error") else None,
    )


def reopen_from_proto(request: pb.ReopenEssaysRequest) -> tuple[str, str, int, tuple[str, ...]]:
    """``(batch_id, run_id, attempt, steps)``."""
    v = Violations()
    v.identifier("batch_id", request.batch_id)
    v.identifier("run_id", request.run_id)
    if not 2 <= request.attempt <= MAX_ATTEMPT:
        v.add("attempt", f"must be 2 to {MAX_ATTEMPT:,} (a retry's attempt; got {request.attempt})")
    steps = tuple(request.steps)
    if not steps:
        v.add("steps", "must name at least one step")
    elif len(steps) > MAX_REOPENED_STEPS:
        v.add("steps", f"must name at most {MAX_REOPENED_STEPS} steps (got {len(steps)})")
    for index, step in enumerate(steps[:MAX_REOPENED_STEPS]):
        v.identifier(f"steps[{index}]", step, MAX_NAME_LENGTH)
        if step in steps[:index]:
            v.add(f"steps[{index}]", f"repeats step {step!r}")
    v.raise_if_any()
    return request.batch_id, request.run_id, request.attempt, steps


def expire_from_proto(request: pb.ExpireStepRequest) -> tuple[str, str, str, int]:
    """``(batch_id, step, run_id, attempt)``."""
    v = Violations()
    v.identifier("batch_id", request.batch_id)
    v.identifier("step", request.step, MAX_NAME_LENGTH)
    v.identifier("run_id", request.run_id)
    if request.attempt > MAX_ATTEMPT:
        v.add("attempt", f"must be at most {MAX_ATTEMPT:,} (got {request.attempt})")
    v.raise_if_any()
    return request.batch_id, request.step, request.run_id, max(request.attempt, 1)


def essay_outcomes_from_proto(request: pb.GetEssayOutcomesRequest) -> tuple[str, tuple[str, ...]]:
    """``(batch_id, essay_ids)``."""
    v = Violations()
    v.identifier("batch_id", request.batch_id)
    essays = v.identifiers("essay_ids", request.essay_ids, MAX_ESSAYS_PER_READ)
    v.raise_if_any()
    return request.batch_id, essays


def name_from_proto(field: str, value: str) -> str:
    v = Violations()
    v.identifier(field, value, MAX_NAME_LENGTH)
    v.raise_if_any()
    return value


def batch_id_from_proto(value: str) -> str:
    v = Violations()
    v.identifier("batch_id", value)
    v.raise_if_any()
    return value


def step_definition_to_proto(step: StepDefinition) -> pb.StepDefinition:
    message = pb.StepDefinition(
        name=step.name,
        service=step.service,
        command=step.command,
        depends_on=step.depends_on,
        requires=step.requires,
        min_success_ratio=step.min_success_ratio,
        produces_text=step.produces_text,
    )
    if step.timeout_seconds is not None:
        message.timeout.FromTimedelta(timedelta(seconds=step.timeout_seconds))
    return message


def step_definition_from_proto(message: pb.StepDefinition) -> StepDefinition:
    """A step as rendered by ``step_definition_to_proto`` (for clients and tests; not
    validated)."""
    timeout = message.timeout.ToTimedelta().total_seconds() if message.HasField("timeout") else None
    return StepDefinition(
        message.name,
        message.service,
        message.command,
        tuple(message.depends_on),
        tuple(message.requires),
        message.min_success_ratio,
        timeout,
        message.produces_text,
    )


def pipeline_to_proto(pipeline: PipelineDefinition, catalog: PipelineCatalog) -> pb.Pipeline:
    return pb.Pipeline(
        name=pipeline.name,
        description=pipeline.description,
        steps=[step_definition_to_proto(s) for s in pipeline.steps],
        version=catalog.pipeline_versions[pipeline.name],
    )


def resolution_to_proto(batch_id: str, resolution: Resolution) -> pb.ResolvePipelineResponse:
    """The response for ``resolution``, parsed from a serialized template plus the batch id.

    Everything but the batch id follows from the target, the definitions' version (a hash of
    every definition of the target's subgraph) and the pruned steps, so the rest is rendered
    once per such key; parsing the template is a third of the cost of building the message.
    """
    key = (resolution.target, resolution.version, tuple(p.step.name for p in resolution.pruned))
    template = _RESOLUTION_TEMPLATES.get(key)
    if template is None:
        if len(_RESOLUTION_TEMPLATES) >= _MAX_TEMPLATES:
            _RESOLUTION_TEMPLATES.clear()
        template = _build_resolution("", resolution).SerializeToString()
        _RESOLUTION_TEMPLATES[key] = template
    response = pb.ResolvePipelineResponse.FromString(template)
    response.batch_id = batch_id
    return response


_RESOLUTION_TEMPLATES: dict[tuple[str, str, tuple[str, ...]], bytes] = {}
_MAX_TEMPLATES = 4096  # targets x pruned sets in use; cleared when full (a reload, say)


def _build_resolution(batch_id: str, resolution: Resolution) -> pb.ResolvePipelineResponse:
    return pb.ResolvePipelineResponse(
        batch_id=batch_id,
        target=resolution.target,
        steps=[step_definition_to_proto(s) for s in resolution.steps],
        pruned_steps=[
            pb.PrunedStep(step=p.step.name, reason=events_pb2.SKIP_REASON_ALREADY_SATISFIED)
            for p in resolution.pruned
        ],
        definition_version=resolution.version,
    )


def step_state_to_proto(state: StepState) -> pb.StepState:
    return pb.StepState(
        step=state.step,
        succeeded=state.succeeded,
        failed=state.failed,
        total=state.total,
        status=STATUS_TO_PROTO[state.status],
        timed_out=state.timed_out,
    )


def record_result_to_proto(result: RecordResult) -> pb.RecordStepOutcomeResponse:
    assert result.state is not None
    return pb.RecordStepOutcomeResponse(
        state=step_state_to_proto(result.state),
        newly_recorded=result.newly_recorded,
        completed_step=result.completed_step,
        verdict=VERDICT_TO_PROTO[result.verdict]
        if result.verdict
        else pb.OUTCOME_VERDICT_UNSPECIFIED,
    )


def reopened_to_proto(reopened: list[Reopened]) -> pb.ReopenEssaysResponse:
    return pb.ReopenEssaysResponse(
        steps=[
            pb.ReopenedStep(step=r.step, essay_ids=r.essay_ids, state=step_state_to_proto(r.state))
            for r in reopened
        ]
    )


def expired_to_proto(expired: Expired) -> pb.ExpireStepResponse:
    return pb.ExpireStepResponse(
        state=step_state_to_proto(expired.state), timed_out_essay_ids=expired.essay_ids
    )


def essay_result_to_proto(result: EssayStepResult) -> pb.EssayStepResult:
    message = pb.EssayStepResult(
        step=result.step,
        outcome=OUTCOME_TO_PROTO[result.outcome]
        if result.outcome is not None
        else events_pb2.STEP_OUTCOME_UNSPECIFIED,
        output_storage_id=result.output_storage_id,
        run_id=result.run_id,
        attempt=result.attempt,
    )
    if result.error_code or result.error_message:
        message.error.code = result.error_code
        message.error.message = result.error_message
    if result.recorded_at is not None:
        message.recorded_at.FromDatetime(result.recorded_at)
    return message


def essay_outcomes_to_proto(
    batch_id: str, found: Mapping[str, list[EssayStepResult]]
) -> pb.GetEssayOutcomesResponse:
    return pb.GetEssayOutcomesResponse(
        batch_id=batch_id,
        essays=[
            pb.EssayOutcomes(essay_id=essay, steps=[essay_result_to_proto(r) for r in results])
            for essay, results in found.items()
        ],
    )


def batch_state_to_proto(state: BatchState) -> pb.GetBatchPipelineStateResponse:
    return pb.GetBatchPipelineStateResponse(
        batch_id=state.batch_id,
        essay_count=state.essay_count,
        flags=dict.fromkeys(sorted(state.flags), True),
        steps=[step_state_to_proto(s) for s in state.steps],
    )
