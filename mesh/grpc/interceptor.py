"""The one wrapper around every RPC: correlation id, the trust boundary, deadlines, metrics,
logging, error mapping.

Methods are wrapped once, when they are registered (``Registrar``), not intercepted per call:
grpc.aio runs a ``ServerInterceptor`` as an extra coroutine on every RPC, which cost about 15% of
the throughput of a trivial RPC here. For every RPC the wrapper sets the correlation id (from
``x-correlation-id`` metadata, generated when absent, echoed back in the trailing metadata),
asks the server's ``Guard`` whether the caller may make the call now (``mesh.security.guard``:
identity, the method's scope from the server's scope table, its rate; a server stream also
counts against the caller's open streams), logs each refusal once on the audit log,
refuses work whose deadline has already passed, counts and times the call,
and turns any exception into a ``google.rpc.Status`` through the server's ``StatusTable``: the one
place errors become status codes. Unmapped errors are INTERNAL and logged once with a traceback.
While the server drains (``mesh.grpc.drain``) it refuses new calls, and a call the drain ends
finishes UNAVAILABLE.

Bytes that do not parse as the method's request message (bad UTF-8 in a string, a corrupt wire
format) are INVALID_ARGUMENT too: the wrapped deserializer hands the method an ``Undecodable``
marker instead of raising, which grpc would answer with UNKNOWN.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from grpc_status import rpc_status

from mesh import correlation
from mesh.errors import FieldViolation, InvalidArgument, Refused
from mesh.grpc.drain import SHUTTING_DOWN, Drain
from mesh.grpc.metrics import RpcMetrics
from mesh.grpc.status import StatusTable
from mesh.security.audit import AuditLog
from mesh.security.guard import Guard
from mesh.security.scopes import ScopeTable

if TYPE_CHECKING:
    from mesh.tracing.provider import Tracing

log = logging.getLogger(__name__)

_OK = grpc.StatusCode.OK.name
_AUTHORIZATION = "authorization"
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
MAX_CORRELATION_ID = 128


class Undecodable:
    """What the wrapped deserializer returns for bytes that are not a request message."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def error(self) -> InvalidArgument:
        return InvalidArgument([FieldViolation("request", f"cannot be parsed: {self.reason}")])


def _tolerant(deserialize: Any) -> Any:
    """``deserialize`` returning an ``Undecodable`` instead of raising."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf's DecodeError, or anything a custom parser raises
            return Undecodable(str(exc) or type(exc).__name__)

    return parse


def correlation_from(incoming: str) -> str:
    """The caller's correlation id when it is printable ASCII of at most 128 characters, else a
    fresh one (it goes into every log line and event of the call)."""
    if 0 < len(incoming) <= MAX_CORRELATION_ID and incoming.isascii() and incoming.isprintable():
        return incoming
    return correlation.new()


class RpcWrapper:
    """Wraps method handlers with the behaviour above; one per server.

    ``scopes`` maps every method's full name to the scope it needs: wrapping a method without
    one fails (the server does not start), so no RPC is ever served outside the table.
    """

    def __init__(
        self,
        table: StatusTable,
        metrics: RpcMetrics,
        scopes: ScopeTable,
        guard: Guard,
        audit: AuditLog | None = None,
        drain: Drain | None = None,
    ) -> None:
        self._table = table
        self._metrics = metrics
        self._scopes = scopes
        self._guard = guard
        self._audit = audit or AuditLog()
        self._drain = drain or Drain()

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], full_method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        service, _, method = full_method.lstrip("/").rpartition("/")
        scope = self._scopes.get(full_method)
        if scope is None:
            raise TypeError(f"{full_method} has no scope in the server's scope table")
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, service, method, scope),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, service, method, scope),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        raise TypeError(f"{full_method}: client-streaming RPCs are not supported")

    def _enter(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """Set the correlation id; return the ``authorization`` metadata, if any."""
        incoming = ""
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == correlation.METADATA_KEY:
                incoming = value if isinstance(value, str) else value.decode(errors="replace")
            elif key == _AUTHORIZATION and authorization is None:
                authorization = value if isinstance(value, str) else ""
        cid = correlation_from(incoming)
        correlation.correlation_id.set(cid)
        context.set_trailing_metadata(((correlation.METADATA_KEY, cid),))
        return authorization

    async def _fail(
        self, exc: Exception, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> str:
        status = self._table.to_status(exc)
        code = _CODE_NAMES.get(status.code, "UNKNOWN")
        if isinstance(exc, Refused):
            self._audit.refused(exc, code, method, context.peer())
        elif self._table.rule_for(exc) is None:
            log.exception("unhandled error in %s", method)
        else:
            log.info("%s failed: %s %s", method, code, status.message)
        converted = rpc_status.to_status(status)
        trailing = (*converted.trailing_metadata, *(context.trailing_metadata() or ()))
        context.set_trailing_metadata(trailing)
        context.set_code(converted.code)
        context.set_details(converted.details)
        return code

    def _unary(self, behavior: Any, service: str, method: str, scope: str) -> Any:
        stats = self._metrics.method(service, method)
        clock = time.perf_counter
        admit = self._guard.admit
        name = f"{service}/{method}"

        drain = self._drain

        async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            authorization = self._enter(context)
            stats.started += 1
            start = clock()
            code = _OK
            if not drain.begin():
                stats.finish(_shutting_down(context), clock() - start)
                return None
            try:
                admit(authorization, context, scope, name)
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    code = grpc.StatusCode.DEADLINE_EXCEEDED.name
                    context.set_code(grpc.StatusCode.DEADLINE_EXCEEDED)
                    context.set_details("deadline exceeded before the call started")
                    return None
                if type(request) is Undecodable:
                    raise request.error()
                return await behavior(request, context)
            except Exception as exc:
                code = await self._fail(exc, context, method)
                return None
            except asyncio.CancelledError:
                if not drain.cancelling:
                    code = grpc.StatusCode.CANCELLED.name
                    raise
                code = _shutting_down(context)
                return None
            finally:
                drain.end()
                stats.finish(code, clock() - start)

        return wrapper

    def _stream(self, behavior: Any, service: str, method: str, scope: str) -> Any:
        stats = self._metrics.method(service, method)
        guard = self._guard
        name = f"{service}/{method}"

        drain = self._drain

        async def wrapper(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            authorization = self._enter(context)
            stats.started += 1
            start = time.perf_counter()
            code = _OK
            principal = None
            if not drain.begin():
                stats.finish(_shutting_down(context), time.perf_counter() - start)
                return
            try:
                caller = guard.admit(authorization, context, scope, name)
                guard.open_stream(caller)
                principal = caller
                if type(request) is Undecodable:
                    raise request.error()
                async for response in behavior(request, context):
                    yield response
            except Exception as exc:
                code = await self._fail(exc, context, method)
            except asyncio.CancelledError:
                if not drain.cancelling:
                    code = grpc.StatusCode.CANCELLED.name
                    raise
                code = _shutting_down(context)
            except BaseException:
                code = grpc.StatusCode.CANCELLED.name
                raise
            finally:
                drain.end()
                if principal is not None:
                    guard.close_stream(principal)
                stats.finish(code, time.perf_counter() - start)

        return wrapper


def _shutting_down(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    context.set_code(grpc.StatusCode.UNAVAILABLE)
    context.set_details(SHUTTING_DOWN)
    return grpc.StatusCode.UNAVAILABLE.name


class Registrar:
    """Stands in for the server while generated ``add_*Servicer_to_server`` functions run.

    Generated code passes each service's method handlers twice: as a generic handler, then by
    name (``add_registered_method_handlers``). The named call is wrapped and both forms are
    registered wrapped; a generic handler without a named twin is refused at start-up rather
    than served unwrapped (it would escape the error table and the metrics). With ``tracing``
    on, each wrapped method runs inside a server span (``mesh.tracing.rpc``), outside the wrapper.
    """

    def __init__(
        self, server: grpc.aio.Server, wrapper: RpcWrapper, tracing: Tracing | None = None
    ) -> None:
        self._server = server
        self._wrapper = wrapper
        self._tracing = tracing
        self._generic: dict[str, grpc.GenericRpcHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        for handler in handlers:
            service_name = getattr(handler, "service_name", None)
            if service_name is None:
                raise TypeError(f"cannot wrap generic handler {handler!r}: register by name")
            self._generic[service_name()] = handler

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self._generic.pop(service, None)
        wrapped = {
            name: self._wrapper.wrap(handler, f"/{service}/{name}")
            for name, handler in handlers.items()
        }
        if self._tracing is not None:
            wrapped = {
                name: self._tracing.server_handler(handler, f"/{service}/{name}")
                for name, handler in wrapped.items()
            }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, wrapped),)
        )
        self._server.add_registered_method_handlers(service, wrapped)

    def close(self) -> None:
        """Call after every registration: fails on a service that was not wrapped."""
        if self._generic:
            raise TypeError(f"services registered without method names: {sorted(self._generic)}")
