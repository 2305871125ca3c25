"""Errors every server shares.

Exception tree (domain packages add their own under their own roots)::

    MeshError
    ├── InvalidArgument       bad input: INVALID_ARGUMENT with a BadRequest detail
    ├── BackendUnavailable    a backend (Redis, PostgreSQL, Kafka, content store) is down:
    │                         UNAVAILABLE, retriable
    └── Refused               the trust boundary turned the call away (one audit log line each)
        ├── Unauthenticated   no or bad credentials: UNAUTHENTICATED
        ├── PermissionDenied  a principal without the method's scope: PERMISSION_DENIED
        └── LimitExceeded     past a principal's limit: RESOURCE_EXHAUSTED with RetryInfo
            ├── RateLimited   its rate of calls of a scope (a token bucket)
            └── StreamLimited its open server streams

``mesh.grpc.status`` turns them (and each server's own errors) into gRPC statuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


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


class Refused(MeshError):
    """The trust boundary turned a call away. ``principal`` is who was calling (empty when
    unknown); ``audit`` says why, for the audit log only: it never holds a secret, and the
    caller sees only the message."""

    def __init__(self, message: str, principal: str = "", audit: str = "") -> None:
        self.principal = principal
        self.audit = audit or message
        super().__init__(message)


class Unauthenticated(Refused):
    """No credentials, or credentials that name no valid principal (unknown, expired)."""


class PermissionDenied(Refused):
    """A known principal without ``scope``, the scope the method needs."""

    def __init__(self, principal: str, scope: str, method: str) -> None:
        self.scope = scope
        self.method = method
        super().__init__(
            f"{method} needs scope {scope}, which {principal} does not have",
            principal,
            f"missing scope {scope}",
        )


class LimitExceeded(Refused):
    """Past a principal's limit; the caller may try again after ``retry_after`` seconds."""

    retriable = True

    def __init__(self, principal: str, retry_after: float, message: str) -> None:
        self.retry_after = retry_after
        super().__init__(message, principal)


class RateLimited(LimitExceeded):
    """Calls of ``scope`` came faster than the principal's rate for it (``rate``: its text)."""

    def __init__(self, principal: str, scope: str, rate: str, retry_after: float) -> None:
        self.scope = scope
        self.rate = rate
        super().__init__(
            principal, retry_after, f"rate limit of {scope} for {principal} ({rate}) exceeded"
        )


class StreamLimited(LimitExceeded):
    """The principal already holds ``limit`` open server streams."""

    def __init__(self, principal: str, limit: int, retry_after: float) -> None:
        self.limit = limit
        super().__init__(
            principal, retry_after, f"{principal} already has {limit} open streams (the limit)"
        )
