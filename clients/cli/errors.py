"""What a failed command prints: one short shape on stderr and a non-zero exit, never a traceback.

    RpcError (clients.errors)   error: CODE (REASON): message, then one indented line per detail
    CommandError                error: message (a command refused its input, found nothing, ...)
    └── Unreachable             error: cannot reach WHAT at TARGET (cause); set SETTING

With ``--json`` an RpcError is its status as JSON (code, message, decoded details) and any other
error ``{"error": message}``, on stderr too.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from clients.errors import RpcError


class CommandError(Exception):
    """A command cannot do what was asked; its message is the whole explanation."""


@dataclass
class Unreachable(CommandError):
    """A server or backend did not answer at all."""

    what: str  # "the BatchService", "Kafka"
    target: str  # the address tried
    setting: str  # what to change: "--batch-address or BATCH_ADDRESS"
    cause: str  # the transport's own words, shortened

    def __str__(self) -> str:
        return f"cannot reach {self.what} at {self.target} ({self.cause}); set {self.setting}"


def is_unreachable(exc: RpcError) -> bool:
    """UNAVAILABLE from the channel itself: the servers' own UNAVAILABLE carries an ErrorInfo."""
    return exc.code is grpc.StatusCode.UNAVAILABLE and not exc.reason


def short_cause(message: str) -> str:
    """The last clause of a transport's message ("... ipv4:127.0.0.1:1: Failed to connect to
    remote host: Connection refused" is "Connection refused")."""
    return message.rsplit(": ", 1)[-1].strip() or message


@contextlib.contextmanager
def reaching(what: str, target: str, setting: str) -> Iterator[None]:
    """Turn a call that never got through to ``what`` into ``Unreachable``."""
    try:
        yield
    except RpcError as exc:
        if is_unreachable(exc):
            raise Unreachable(what, target, setting, short_cause(exc.message)) from exc
        raise


def detail_lines(detail: Message) -> list[str]:
    """What one google.rpc detail adds to an error, one line per item."""
    if isinstance(detail, error_details_pb2.BadRequest):
        return [f"{v.field}: {v.description}" for v in detail.field_violations]
    if isinstance(detail, error_details_pb2.PreconditionFailure):
        return [f"{v.type} {v.subject}: {v.description}" for v in detail.violations]
    if isinstance(detail, error_details_pb2.QuotaFailure):
        return [f"quota {v.subject}: {v.description}" for v in detail.violations]
    if isinstance(detail, error_details_pb2.RetryInfo):
        delay = detail.retry_delay.ToTimedelta().total_seconds()
        return [f"retry in {delay:g}s"]
    if isinstance(detail, error_details_pb2.ResourceInfo):
        described = f": {detail.description}" if detail.description else ""
        return [f"resource: {detail.resource_type} {detail.resource_name}{described}"]
    return []  # ErrorInfo: its reason is in the first line


def rpc_lines(exc: RpcError) -> list[str]:
    """``error: CODE (REASON): message`` and an indented line per detail."""
    shown = exc.reason and exc.reason != exc.code.name
    reason = f" ({exc.reason})" if shown else ""
    lines = [f"error: {exc.code.name}{reason}: {exc.message}"]
    lines += [f"  {line}" for detail in exc.details for line in detail_lines(detail)]
    if exc.correlation_id:
        lines.append(f"  correlation id {exc.correlation_id}")
    return lines


def rpc_json(exc: RpcError) -> str:
    shown: dict[str, Any] = {"code": exc.code.name, "message": exc.message}
    shown["details"] = [json_format.MessageToDict(d) for d in exc.details]
    if exc.correlation_id:
        shown["correlation_id"] = exc.correlation_id
    return json.dumps(shown, indent=2)


def report(exc: Exception, as_json: bool) -> str:
    """What to print on stderr for ``exc`` (an RpcError or a CommandError)."""
    if isinstance(exc, RpcError):
        return rpc_json(exc) if as_json else "\n".join(rpc_lines(exc))
    return json.dumps({"error": str(exc)}) if as_json else f"error: {exc}"
