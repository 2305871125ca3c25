"""Errors every server shares.

Exception tree (domain packages add their own under their own roots)::

    MeshError
    ├── InvalidArgument       bad input: INVALID_ARGUMENT with a BadRequest detail
    └── BackendUnavailable    a backend (Redis, PostgreSQL, Kafka, content store) is down:
                              UNAVAILABLE, retriable

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
