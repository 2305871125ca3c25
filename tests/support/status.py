"""Reading a refusal the way a client would: its code, its reason, its BadRequest fields."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2

from clients import RpcError


def violations(error: RpcError, reason: str = "INVALID_ARGUMENT") -> list[tuple[str, str]]:
    """The (field, description) of each BadRequest violation of an INVALID_ARGUMENT ``error``
    whose ErrorInfo reason is ``reason``."""
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason), error
    bad = error.detail(error_details_pb2.BadRequest)
    assert isinstance(bad, error_details_pb2.BadRequest)
    return [(v.field, v.description) for v in bad.field_violations]
