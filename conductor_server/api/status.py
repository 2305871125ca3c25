"""The conductor's one error table: every domain and state error and its gRPC status.

=========================  ===================  ==========================================
error                      code                 details
=========================  ===================  ==========================================
UnknownPipeline/Step/...   NOT_FOUND            ResourceInfo(pipeline / step / target)
store.UnknownBatch         NOT_FOUND            ResourceInfo(batch)
store.UnknownStep          NOT_FOUND            ResourceInfo(step)
PreconditionFailed         FAILED_PRECONDITION  PreconditionFailure, one violation per unmet
                                                flag (type FLAG) or dependency (type STEP)
EssayNotExpected           FAILED_PRECONDITION  PreconditionFailure (type ESSAY)
StepNotAllowed             FAILED_PRECONDITION  PreconditionFailure, one violation per missing
                                                flag (type FLAG)
ConflictingOutcome         ALREADY_EXISTS       ResourceInfo(essay_outcome)
RegistrationConflict       ALREADY_EXISTS       ResourceInfo(batch)
InvalidRegistration        INVALID_ARGUMENT     BadRequest(essay_ids)
InvalidArgument (mesh)     INVALID_ARGUMENT     BadRequest
BackendUnavailable (mesh)  UNAVAILABLE          ResourceInfo(backend)
anything else              INTERNAL             (logged once with its traceback)
=========================  ===================  ==========================================
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2 as details

from conductor_server.domain.errors import NotFound, PreconditionFailed
from conductor_server.store import errors as state
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


Code = grpc.StatusCode

TABLE = StatusTable(
    DOMAIN,
    [
        StatusRule(NotFound, Code.NOT_FOUND, "UNKNOWN_TARGET", _not_found),
        StatusRule(state.UnknownBatch, Code.NOT_FOUND, "UNKNOWN_BATCH", _unknown_batch),
        StatusRule(state.UnknownStep, Code.NOT_FOUND, "UNKNOWN_STEP", _unknown_step),
        StatusRule(PreconditionFailed, Code.FAILED_PRECONDITION, "PRECONDITION", _preconditions),
        StatusRule(
            state.EssayNotExpected,
            Code.FAILED_PRECONDITION,
            "ESSAY_NOT_EXPECTED",
            _essay_not_expected,
        ),
        StatusRule(
            state.StepNotAllowed,
            Code.FAILED_PRECONDITION,
            "PREREQUISITES_NOT_MET",
            _step_not_allowed,
        ),
        StatusRule(state.ConflictingOutcome, Code.ALREADY_EXISTS, "OUTCOME_CONFLICT", _conflicting),
        StatusRule(
            state.RegistrationConflict,
            Code.ALREADY_EXISTS,
            "REGISTRATION_CONFLICT",
            _registration_conflict,
        ),
        StatusRule(
            state.InvalidRegistration,
            Code.INVALID_ARGUMENT,
            "INVALID_REGISTRATION",
            _invalid_registration,
        ),
    ],
)
