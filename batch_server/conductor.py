"""The PipelineConductor as the BatchService sees it: register batches, resolve pipelines,
reopen a run's essays for a retry, time steps out, read essays' step results.

Wraps the SDK client (deadline per call; UNAVAILABLE retried by the channel's service config)
and translates its ``RpcError`` into this service's errors, in one table:

====================  ==================================================================
conductor answers     raised here
====================  ==================================================================
UNAVAILABLE,          ``mesh.errors.BackendUnavailable("conductor")`` (→ UNAVAILABLE)
DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED    (this service's own rate limit at the conductor: retry later)
UNAUTHENTICATED,      ``ConductorFailed`` (→ INTERNAL), logged as an ERROR: the
PERMISSION_DENIED     BatchService's own credentials (``CONDUCTOR_API_KEY``, its client
                      certificate) are wrong or lack a scope
NOT_FOUND             ``UnknownPipeline`` (→ NOT_FOUND); for GetEssayOutcomes (the
                      conductor does not know the batch) no step results
FAILED_PRECONDITION   ``PipelineRejected`` with the conductor's PreconditionFailure
                      violations (→ FAILED_PRECONDITION with the same violations)
INVALID_ARGUMENT,     ``UnknownFlag`` (→ INVALID_ARGUMENT, reason UNKNOWN_FLAG) with the
reason UNKNOWN_FLAG   conductor's violations, from RegisterBatch and ResolvePipeline alike
INVALID_ARGUMENT      ``mesh.errors.InvalidArgument`` with its BadRequest (``target`` is
                      our ``pipeline``)
anything else         ``ConductorFailed`` (→ INTERNAL)
====================  ==================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
from google.rpc import error_details_pb2

from batch_server.domain.errors import (
    ConductorFailed,
    PipelineRejected,
    Precondition,
    UnknownFlag,
    UnknownPipeline,
)
from batch_server.domain.essays import EssayStepResult, Outcome
from batch_server.domain.model import Batch, Resolution, StepPlan
from clients.conductor import ConductorClient
from clients.errors import RpcError
from generated.huleedu.conductor.v1 import conductor_pb2 as cpb
from generated.huleedu.events.v1 import events_pb2
from mesh.errors import BackendUnavailable, FieldViolation, InvalidArgument
from mesh.grpc.reasons import Reason

log = logging.getLogger(__name__)

BACKEND = "conductor"
_UNREACHABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)
_REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
_OUTCOMES = {
    events_pb2.STEP_OUTCOME_SUCCEEDED: Outcome.SUCCEEDED,
    events_pb2.STEP_OUTCOME_FAILED: Outcome.FAILED,
}


class Conductor:
    """Register and resolve through one ``ConductorClient`` (owned by the caller)."""

    def __init__(self, client: ConductorClient) -> None:
        self._client = client

    async def register(self, batch: Batch) -> None:
        """Teach the conductor the batch's essays and flags (idempotent)."""
        try:
            await self._client.register_batch(
                batch.batch_id, [e.essay_id for e in batch.essays], dict(batch.metadata.flags)
            )
        except RpcError as exc:
            raise _translate(exc, None) from exc

    async def resolve(self, batch: Batch, target: str) -> Resolution:
        """The steps ``target`` still needs for the batch (not a dry run: PhaseSkipped is
        emitted by the conductor for each pruned step)."""
        try:
            response = await self._client.resolve_pipeline(
                batch.batch_id, target, dict(batch.metadata.flags), dry_run=False
            )
        except RpcError as exc:
            raise _translate(exc, target) from exc
        steps = tuple(_plan(step) for step in response.steps)
        pruned = tuple(p.step for p in response.pruned_steps)
        return Resolution(steps, pruned, response.definition_version)

    async def reopen(
        self, batch_id: str, run_id: str, attempt: int, steps: Sequence[str]
    ) -> dict[str, tuple[str, ...]]:
        """Reopen, at ``attempt`` of ``run_id``, the failed and missing essays of ``steps``; per
        step, the essays open at that attempt (batch order)."""
        try:
            response = await self._client.reopen_essays(batch_id, run_id, attempt, steps)
        except RpcError as exc:
            raise _translate(exc, "retry") from exc
        return {step.step: tuple(step.essay_ids) for step in response.steps}

    async def expire(self, batch_id: str, step: str, run_id: str, attempt: int) -> int:
        """Time ``step`` out for ``attempt`` of ``run_id``: its essays without an outcome fail
        with TIMED_OUT (idempotent). How many did."""
        try:
            response = await self._client.expire_step(batch_id, step, run_id, attempt)
        except RpcError as exc:
            raise _translate(exc, None) from exc
        return len(response.timed_out_essay_ids)

    async def essay_results(
        self, batch_id: str, essay_ids: Sequence[str]
    ) -> dict[str, tuple[EssayStepResult, ...]]:
        """Each essay's step results in definition order (1 to 1,000 essays, one call). An essay
        the conductor does not know, or of a batch it does not know (NOT_FOUND), has none."""
        try:
            response = await self._client.get_essay_outcomes(batch_id, essay_ids)
        except RpcError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                return {}
            raise _translate(exc, None) from exc
        return {
            essay.essay_id: tuple(_step_result(r) for r in essay.steps) for essay in response.essays
        }


def _plan(step: cpb.StepDefinition) -> StepPlan:
    timeout = step.timeout.ToTimedelta().total_seconds() if step.HasField("timeout") else None
    return StepPlan(step.name, step.command, tuple(step.depends_on), timeout, step.produces_text)


def _step_result(result: cpb.EssayStepResult) -> EssayStepResult:
    return EssayStepResult(
        result.step,
        _OUTCOMES.get(result.outcome),
        result.error.code,
        result.error.message,
        result.output_storage_id,
        result.attempt,
        result.run_id,
    )


def _translate(exc: RpcError, target: str | None) -> Exception:
    """The error of a failed call; ``target`` is None for RegisterBatch."""
    if exc.code in _UNREACHABLE:
        return BackendUnavailable(BACKEND, f"{exc.code.name}: {exc.message}")
    if exc.code in _REFUSED:
        log.error(
            "the conductor refused this service's credentials (%s: %s); check "
            "CONDUCTOR_API_KEY or the client certificate and its scopes",
            exc.code.name,
            exc.message,
        )
        return ConductorFailed(exc.code.name, exc.message)
    if exc.code == grpc.StatusCode.INVALID_ARGUMENT and exc.reason == Reason.UNKNOWN_FLAG:
        unknown = _unknown_flags(exc)
        if unknown:
            return UnknownFlag(unknown)
    if target is None:
        return ConductorFailed(exc.code.name, exc.message)
    if exc.code == grpc.StatusCode.NOT_FOUND:
        return UnknownPipeline(target)
    if exc.code == grpc.StatusCode.FAILED_PRECONDITION:
        detail = exc.detail(error_details_pb2.PreconditionFailure)
        violations = (
            [Precondition(v.type, v.subject, v.description) for v in detail.violations]
            if detail is not None
            else []
        )
        return PipelineRejected(target, exc.message, violations)
    if exc.code == grpc.StatusCode.INVALID_ARGUMENT:
        bad = exc.detail(error_details_pb2.BadRequest)
        fields = (
            [
                FieldViolation("pipeline" if v.field == "target" else v.field, v.description)
                for v in bad.field_violations
            ]
            if bad is not None
            else []
        )
        return InvalidArgument(fields or [FieldViolation("pipeline", exc.message)])
    return ConductorFailed(exc.code.name, exc.message)


def _unknown_flags(exc: RpcError) -> dict[str, str]:
    """Flag name -> description, from the BadRequest of UNKNOWN_FLAG (fields ``flags[<name>]``)."""
    bad = exc.detail(error_details_pb2.BadRequest)
    violations = bad.field_violations if bad is not None else []
    return {
        v.field.removeprefix("flags[").removesuffix("]"): v.description
        for v in violations
        if v.field.startswith("flags[") and v.field.endswith("]")
    }
