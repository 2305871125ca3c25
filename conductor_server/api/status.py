"""The conductor's one error table: every domain and state error and its gRPC status.

=========================  =====================  ===================  ==========================
error                      reason                 code                 details
=========================  =====================  ===================  ==========================
UnknownPipeline,           PIPELINE_NOT_FOUND     NOT_FOUND            ResourceInfo(pipeline /
UnknownTarget                                                          pipeline or step)
UnknownStep, store's       STEP_NOT_FOUND         NOT_FOUND            ResourceInfo(step)
store.UnknownBatch         BATCH_NOT_FOUND        NOT_FOUND            ResourceInfo(batch)
PreconditionFailed         PREREQUISITES_NOT_MET  FAILED_PRECONDITION  PreconditionFailure, one
                                                                       violation per unmet flag
                                                                       (type FLAG) or dependency
                                                                       (type STEP)
StepNotAllowed             PREREQUISITES_NOT_MET  FAILED_PRECONDITION  PreconditionFailure, one
                                                                       violation per missing flag
                                                                       (type FLAG)
EssayNotExpected           ESSAY_NOT_EXPECTED     FAILED_PRECONDITION  PreconditionFailure (type
                                                                       ESSAY)
ConflictingOutcome         OUTCOME_CONFLICT       ALREADY_EXISTS       ResourceInfo(essay_outcome)
RegistrationConflict       REGISTRATION_CONFLICT  ALREADY_EXISTS       ResourceInfo(batch)
InvalidRegistration        INVALID_ARGUMENT       INVALID_ARGUMENT     BadRequest(essay_ids)
UnknownFlag                UNKNOWN_FLAG           INVALID_ARGUMENT     BadRequest, one violation
                                                                       per unknown flag
                                                                       (flags[<name>], naming the
                                                                       known flags)
InvalidArgument (mesh)     INVALID_ARGUMENT       INVALID_ARGUMENT     BadRequest
BackendUnavailable (mesh)  BACKEND_UNAVAILABLE    UNAVAILABLE          ResourceInfo(backend)
anything else              INTERNAL               INTERNAL             (logged once with its
                                                                       traceback)
=========================  =====================  ===================  ==========================

Every status also carries an ``ErrorInfo`` (domain ``conductor.huleedu``, the reason above; the
reasons are ``mesh.grpc.reasons.Reason``, shared with the BatchService).
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message
from google.rpc import error_details_pb2 as details

from conductor_server.domain.errors import (
    NotFound,
    PreconditionFailed,
    UnknownFlag,
    UnknownPipeline,
    UnknownStep,
    UnknownTarget,
)
from conductor_server.store import errors as state
from mesh.grpc.reasons import Reason
from mesh.grpc.status import StatusRule, StatusTable

DOMAIN = "conductor.huleedu"


def _resource(kind: str, name: str, description: str = "") -> details.ResourceInfo:
    return details.ResourceInfo(resource_type=kind, resource_name=name, description=description)


def _not_found(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, NotFound)
    return [_resource(exc.resource_type, exc.name)]


def _unknown_batch(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, state.UnknownBatch)
    return [_resource("batch", exc.batch_id)]


def _unknown_step(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, state.UnknownStep)
    return [_resource("step", exc.step)]


def _unknown_flags(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, UnknownFlag)
    violations = [
        details.BadRequest.FieldViolation(field=f"flags[{name}]", description=exc.description(name))
        for name in exc.unknown
    ]
    return [details.BadRequest(field_violations=violations)]


def _preconditions(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, PreconditionFailed)
    violations = [
        details.PreconditionFailure.Violation(
            type=v.kind.value, subject=v.subject, description=v.description
        )
        for v in exc.violations
    ]
    return [details.PreconditionFailure(violations=violations)]


def _essay_not_expected(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, state.EssayNotExpected)
    violation = details.PreconditionFailure.Violation(
        type="ESSAY", subject=exc.essay_id, description=str(exc)
    )
    return [details.PreconditionFailure(violations=[violation])]


def _step_not_allowed(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, state.StepNotAllowed)
    violations = [
        details.PreconditionFailure.Violation(
            type="FLAG", subject=flag, description=f"step '{exc.step}' requires flag '{flag}'"
        )
        for flag in exc.missing_flags
    ]
    return [details.PreconditionFailure(violations=violations)]


def _conflicting(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, state.ConflictingOutcome)
    name = f"{exc.batch_id}/{exc.step}/{exc.essay_id}"
    return [_resource("essay_outcome", name, f"already {exc.recorded.value}")]


def _registration_conflict(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, state.RegistrationConflict)
    return [_resource("batch", exc.batch_id, "registered with a different essay set")]


def _invalid_registration(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, state.InvalidRegistration)
    violation = details.BadRequest.FieldViolation(field="essay_ids", description=exc.reason)
    return [details.BadRequest(field_violations=[violation])]


TABLE = StatusTable(
    DOMAIN,
    [
        StatusRule(UnknownPipeline, Reason.PIPELINE_NOT_FOUND, _not_found),
        StatusRule(UnknownTarget, Reason.PIPELINE_NOT_FOUND, _not_found),
        StatusRule(UnknownStep, Reason.STEP_NOT_FOUND, _not_found),
        StatusRule(state.UnknownBatch, Reason.BATCH_NOT_FOUND, _unknown_batch),
        StatusRule(UnknownFlag, Reason.UNKNOWN_FLAG, _unknown_flags),
        StatusRule(state.UnknownStep, Reason.STEP_NOT_FOUND, _unknown_step),
        StatusRule(PreconditionFailed, Reason.PREREQUISITES_NOT_MET, _preconditions),
        StatusRule(state.EssayNotExpected, Reason.ESSAY_NOT_EXPECTED, _essay_not_expected),
        StatusRule(state.StepNotAllowed, Reason.PREREQUISITES_NOT_MET, _step_not_allowed),
        StatusRule(state.ConflictingOutcome, Reason.OUTCOME_CONFLICT, _conflicting),
        StatusRule(
            state.RegistrationConflict, Reason.REGISTRATION_CONFLICT, _registration_conflict
        ),
        StatusRule(state.InvalidRegistration, Reason.INVALID_ARGUMENT, _invalid_registration),
    ],
)
