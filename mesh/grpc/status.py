"""The table that turns any error into a gRPC status: the only place errors become codes.

Each server builds one ``StatusTable`` from ``StatusRule`` rows. Rules match by ``isinstance``
in order, the server's own rules before the shared ones (``MESH_RULES``); anything unmatched is
INTERNAL and logged once, with its traceback, by the interceptor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from mesh.errors import BackendUnavailable, InvalidArgument

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
