"""The BatchService's one error table: every error it raises and its gRPC status.

=========================  =====================  ===================  ==================="""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message
from google.rpc import error_details_pb2 as details

from batch_server.domain.errors import (
    BatchNotFound,
    ConductorFailed,
    ContentNotFound,
    EssayNotFound,
    NotFound,
    NothingToRetry,
    PipelineRejected,
    RequestIdReused,
    RunConflict,
    RunFinished,
    RunNotFinished,
    RunNotFound,
    UnknownCommand,
    UnknownFlag,
    UnknownPipeline,
)
from mesh.grpc.reasons import Reason
from mesh.grpc.status import StatusRule, StatusTable

DOMAIN = "batch.huleedu"


def _not_found(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, NotFound)
    return [details.ResourceInfo(resource_type=exc.resource_type, resource_name=exc.name)]


def _run_conflict(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, RunConflict)
    info = details.ResourceInfo(
        resource_type="pipeline_run",
        resource_name=exc.active_run_id,
        owner=exc.batch_id,
        description="the batch's active run; one run per batch at a time",
    )
    return [info]


def _request_reused(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, RequestIdReused)
    violation = details.BadRequest.FieldViolation(
        field=exc.field, description=f"already used for {exc.detail}"
    )
    return [details.BadRequest(field_violations=[violation])]


def _unknown_flags(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, UnknownFlag)
    violations = [
        details.BadRequest.FieldViolation(field=f"metadata.flags[{name}]", description=why)
        for name, why in exc.flags.items()
    ]
    return [details.BadRequest(field_violations=violations)]


def _rejected(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, PipelineRejected)
    violations = [
        details.PreconditionFailure.Violation(
            type=v.kind, subject=v.subject, description=v.description
        )
        for v in exc.violations
    ]
    return [details.PreconditionFailure(violations=violations)]


def _unknown_command(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, UnknownCommand)
    violation = details.PreconditionFailure.Violation(
        type="COMMAND", subject=exc.command, description=str(exc)
    )
    return [details.PreconditionFailure(violations=[violation])]


def _run_state(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, RunFinished | RunNotFinished | NothingToRetry)
    violation = details.PreconditionFailure.Violation(
        type="RUN", subject=exc.run_id, description=str(exc)
    )
    return [details.PreconditionFailure(violations=[violation])]


def _conductor(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, ConductorFailed)
    return [
        details.ResourceInfo(
            resource_type="backend", resource_name="conductor", description=exc.code
        )
    ]


TABLE = StatusTable(
    DOMAIN,
    [
        StatusRule(BatchNotFound, Reason.BATCH_NOT_FOUND, _not_found),
        StatusRule(RunNotFound, Reason.RUN_NOT_FOUND, _not_found),
        StatusRule(EssayNotFound, Reason.ESSAY_NOT_FOUND, _not_found),
        StatusRule(UnknownPipeline, Reason.PIPELINE_NOT_FOUND, _not_found),
        StatusRule(ContentNotFound, Reason.CONTENT_NOT_FOUND, _not_found),
        StatusRule(RunConflict, Reason.ACTIVE_RUN_EXISTS, _run_conflict),
        StatusRule(RunFinished, Reason.RUN_FINISHED, _run_state),
        StatusRule(RunNotFinished, Reason.RUN_NOT_FINISHED, _run_state),
        StatusRule(NothingToRetry, Reason.NOTHING_TO_RETRY, _run_state),
        StatusRule(RequestIdReused, Reason.REQUEST_ID_REUSED, _request_reused),
        StatusRule(UnknownFlag, Reason.UNKNOWN_FLAG, _unknown_flags),
        StatusRule(PipelineRejected, Reason.PREREQUISITES_NOT_MET, _rejected),
        StatusRule(UnknownCommand, Reason.UNKNOWN_COMMAND, _unknown_command),
        StatusRule(ConductorFailed, Reason.CONDUCTOR_FAILED, _conductor),
    ],
)
