"""Errors every server shares, and the table that turns any error into a gRPC status.

Exception tree (domain packages add their own under their own roots)::

    MeshError
    ├── InvalidArgument       bad input: INVALID_ARGUMENT with a BadRequest detail
    └── BackendUnavailable    a backend (Redis, PostgreSQL, Kafka, content store) is down:
                              UNAVAILABLE, retriable

Each server builds one ``StatusTable`` from ``StatusRule`` rows: the only place errors become
status codes. Rules match by ``isinstance`` in order; anything unmatched is INTERNAL and logged
once, with its traceback, by the interceptor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2


class MeshError(Exception):
    """Root of the errors defined in ``mesh``."""

    retriable = False


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class InvalidArgument(MeshError):
    """The request is malformed; ``violations`` name each bad field."""

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))


class BackendUnavailable(MeshError):
    """A backend could not be reached; the caller may retry."""

    retriable = True

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"{backend} unavailable: {reason}")


DetailBuilder = Callable[[BaseException], Sequence[Message]]


def _no_details(_: BaseException) -> Sequence[Message]:
    return ()


@dataclass(frozen=True, slots=True)
class StatusRule:
    """Errors of type ``error`` become ``code`` with an ErrorInfo ``reason`` and extra details."""

    error: type[BaseException]
    code: grpc.StatusCode
    reason: str
    details: DetailBuilder = field(default=_no_details)


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


MESH_RULES: tuple[StatusRule, ...] = (
    StatusRule(InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", bad_request),
    StatusRule(
        BackendUnavailable, grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE", backend_retry_info
    ),
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
            return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
        info = error_details_pb2.ErrorInfo(
            reason=rule.reason, domain=self._domain, metadata={"type": type(exc).__name__}
        )
        details = []
        for message in (info, *rule.details(exc)):
            packed = any_pb2.Any()
            packed.Pack(message)
            details.append(packed)
        return status_pb2.Status(code=rule.code.value[0], message=str(exc), details=details)
