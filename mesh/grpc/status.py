"""The table that turns any error into a gRPC status: the only place errors become codes.

Each server builds one ``StatusTable`` from ``StatusRule`` rows. A rule names a reason of the
one vocabulary (``mesh.grpc.reasons.Reason``), and the status code is the reason's. Rules match
by ``isinstance`` in order, the server's own rules before the shared ones (``MESH_RULES``);
anything unmatched is INTERNAL (reason ``INTERNAL``, a generic message) and logged once, with
its traceback, by the interceptor.

Every status carries an ``ErrorInfo`` (the rule's reason, the server's domain, the error's type
and the rule's ``metadata``). The shared rules:

=====================  ===================  ==================  ===============================
error                  code                 ErrorInfo reason    details
=====================  ===================  ==================  ===============================
InvalidArgument        INVALID_ARGUMENT     INVALID_ARGUMENT    BadRequest
BackendUnavailable     UNAVAILABLE          BACKEND_UNAVAILABLE ResourceInfo(backend)
Unauthenticated        UNAUTHENTICATED      UNAUTHENTICATED
PermissionDenied       PERMISSION_DENIED    MISSING_SCOPE       metadata: scope, method
RateLimited            RESOURCE_EXHAUSTED   RATE_LIMITED        RetryInfo, QuotaFailure;
                                                                metadata: scope
StreamLimited          RESOURCE_EXHAUSTED   TOO_MANY_STREAMS    RetryInfo, QuotaFailure
=====================  ===================  ==================  ===============================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from mesh.errors import (
    BackendUnavailable,
    InvalidArgument,
    LimitExceeded,
    PermissionDenied,
    RateLimited,
    StreamLimited,
    Unauthenticated,
)
from mesh.grpc.reasons import Reason

DetailBuilder = Callable[[BaseException], Sequence[Message]]
MetadataBuilder = Callable[[BaseException], Mapping[str, str]]


def _no_details(_: BaseException) -> Sequence[Message]:
    return ()


def _no_metadata(_: BaseException) -> Mapping[str, str]:
    return {}


@dataclass(frozen=True, slots=True)
class StatusRule:
    """Errors of type ``error`` become the status of ``reason`` (its code, an ErrorInfo naming
    it) with extra details."""

    error: type[BaseException]
    reason: Reason
    details: DetailBuilder = field(default=_no_details)
    metadata: MetadataBuilder = field(default=_no_metadata)  # more ErrorInfo metadata

    @property
    def code(self) -> grpc.StatusCode:
        return self.reason.code


def bad_request(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, InvalidArgument)
    return [
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in exc.violations
            ]
        )
    ]


def backend_retry_info(exc: BaseException) -> Sequence[Message]:
    assert isinstance(exc, BackendUnavailable)
    return [
        error_details_pb2.ResourceInfo(
            resource_type="backend", resource_name=exc.backend, description=exc.reason
        )
    ]


def retry_later(exc: BaseException) -> Sequence[Message]:
    """``RetryInfo`` (when a retry may succeed, rounded up to the millisecond) and
    ``QuotaFailure`` (whose limit, and which)."""
    assert isinstance(exc, LimitExceeded)
    millis = max(1, math.ceil(exc.retry_after * 1000))
    delay = duration_pb2.Duration(seconds=millis // 1000, nanos=millis % 1000 * 1_000_000)
    subject = f"principal:{exc.principal}"
    quota = error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(subject=subject, description=str(exc))]
    )
    return [error_details_pb2.RetryInfo(retry_delay=delay), quota]


def _missing_scope(exc: BaseException) -> Mapping[str, str]:
    assert isinstance(exc, PermissionDenied)
    return {"scope": exc.scope, "method": exc.method}


def _rate_scope(exc: BaseException) -> Mapping[str, str]:
    assert isinstance(exc, RateLimited)
    return {"scope": exc.scope}


MESH_RULES: tuple[StatusRule, ...] = (
    StatusRule(InvalidArgument, Reason.INVALID_ARGUMENT, bad_request),
    StatusRule(BackendUnavailable, Reason.BACKEND_UNAVAILABLE, backend_retry_info),
    StatusRule(Unauthenticated, Reason.UNAUTHENTICATED),
    StatusRule(PermissionDenied, Reason.MISSING_SCOPE, metadata=_missing_scope),
    StatusRule(RateLimited, Reason.RATE_LIMITED, retry_later, _rate_scope),
    StatusRule(StreamLimited, Reason.TOO_MANY_STREAMS, retry_later),
)


class StatusTable:
    """Maps errors to ``google.rpc.Status`` messages for one service domain."""

    def __init__(self, domain: str, rules: Sequence[StatusRule]) -> None:
        self._domain = domain
        self._rules = tuple(rules) + MESH_RULES

    def rule_for(self, exc: BaseException) -> StatusRule | None:
        return next((r for r in self._rules if isinstance(exc, r.error)), None)

    def to_status(self, exc: BaseException) -> status_pb2.Status:
        """The status for ``exc``: its rule's code and details, or INTERNAL when unmapped."""
        rule = self.rule_for(exc)
        if rule is None:
            internal = error_details_pb2.ErrorInfo(reason=Reason.INTERNAL, domain=self._domain)
            return _status(Reason.INTERNAL, "internal error", [internal])
        info = error_details_pb2.ErrorInfo(
            reason=rule.reason,
            domain=self._domain,
            metadata={"type": type(exc).__name__, **rule.metadata(exc)},
        )
        return _status(rule.reason, str(exc), [info, *rule.details(exc)])


def _status(reason: Reason, message: str, details: Sequence[Message]) -> status_pb2.Status:
    packed = []
    for detail in details:
        one = any_pb2.Any()
        one.Pack(detail)
        packed.append(one)
    return status_pb2.Status(code=reason.code.value[0], message=message, details=packed)
