"""The one error type of the SDK: a failed RPC with its decoded ``google.rpc.Status`` details."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.QuotaFailure,
)
Detail = TypeVar("Detail", bound=Message)


@dataclass
class RpcError(Exception):
    """An RPC failed. ``details`` are the decoded ``google.rpc.Status`` detail messages."""

    code: grpc.StatusCode
    message: str
    details: list[Message] = field(default_factory=list)
    correlation_id: str = ""

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @property
    def reason(self) -> str:
        """The ErrorInfo reason (e.g. ``BATCH_NOT_FOUND``; ``docs/errors.md`` lists them), empty
        when there is none."""
        return next(
            (d.reason for d in self.details if isinstance(d, error_details_pb2.ErrorInfo)), ""
        )

    def detail(self, kind: type[Detail]) -> Detail | None:
        """The first detail of type ``kind`` (e.g. ``error_details_pb2.BadRequest``), or None."""
        return next((d for d in self.details if isinstance(d, kind)), None)

    @classmethod
    def from_aio(cls, exc: grpc.aio.AioRpcError) -> RpcError:
        details: list[Message] = []
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
        if status is not None:
            for packed in status.details:
                for kind in _DETAIL_TYPES:
                    if packed.Is(kind.DESCRIPTOR):
                        message = kind()
                        packed.Unpack(message)
                        details.append(message)
        trailing = dict(exc.trailing_metadata() or ())
        cid = trailing.get("x-correlation-id", "")
        return cls(exc.code(), exc.details() or "", details, cid if isinstance(cid, str) else "")
