"""The BatchService's one error table: every error it raises and its gRPC status.

=========================  ===================  ==========================================
error                      code                 details
=========================  ===================  ==========================================
BatchNotFound              NOT_FOUND            ResourceInfo(batch)
RunNotFound                NOT_FOUND            ResourceInfo(pipeline_run)
EssayNotFound              NOT_FOUND            ResourceInfo(essay)
UnknownPipeline            NOT_FOUND            ResourceInfo(pipeline)
ContentNotFound            NOT_FOUND            ResourceInfo(content)
RunConflict                ABORTED              ResourceInfo(pipeline_run: the active run)
RequestIdReused            INVALID_ARGUMENT     BadRequest(request_id)
PipelineRejected           FAILED_PRECONDITION  PreconditionFailure: the conductor's violations
UnknownCommand             FAILED_PRECONDITION  PreconditionFailure(type COMMAND)
ConductorFailed            INTERNAL             ResourceInfo(backend conductor)
InvalidArgument (mesh)     INVALID_ARGUMENT     BadRequest
BackendUnavailable (mesh)  UNAVAILABLE          ResourceInfo(backend: content-service,
                                                postgresql, conductor, batch-service)
anything else              INTERNAL             (logged once with its traceback)
=========================  ===================  ==========================================

Every status also carries an ``ErrorInfo`` (domain ``batch.huleedu``, the reason below;
EssayNotFound's is ESSAY_NOT_FOUND, the other NotFound errors' NOT_FOUND).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2 as details

from batch_server.domain.errors import (
    ConductorFailed,
    EssayNotFound,
    NotFound,
    PipelineRejected,
    RequestIdReused,
    RunConflict,
    UnknownCommand,
)
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


def _conductor(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, ConductorFailed)
    return [
        details.ResourceInfo(
            resource_type="backend", resource_name="conductor", description=exc.code
        )
    ]


Code = grpc.StatusCode

TABLE = StatusTable(
    DOMAIN,
    [
        StatusRule(EssayNotFound, Code.NOT_FOUND, "ESSAY_NOT_FOUND", _not_found),
        StatusRule(NotFound, Code.NOT_FOUND, "NOT_FOUND", _not_found),
        StatusRule(RunConflict, Code.ABORTED, "ACTIVE_RUN_EXISTS", _run_conflict),
        StatusRule(RequestIdReused, Code.INVALID_ARGUMENT, "REQUEST_ID_REUSED", _request_reused),
        StatusRule(PipelineRejected, Code.FAILED_PRECONDITION, "PRECONDITION", _rejected),
        StatusRule(UnknownCommand, Code.FAILED_PRECONDITION, "UNKNOWN_COMMAND", _unknown_command),
        StatusRule(ConductorFailed, Code.INTERNAL, "CONDUCTOR_FAILED", _conductor),
    ],
)
