"""Spans of gRPC calls: a server span around each handler, a client span around each call.

Server: the handler is wrapped *outside* the server's one wrapper (``mesh.grpc.interceptor``),
so the span covers everything the call does (the drain's refusal, the error mapping) and reads
the final status code from the context once the wrapper has set it. Its parent is the caller's
context from the ``traceparent`` metadata. Client: an interceptor starts a span, sends its
context in the call's metadata and ends it with the call's status code.

Names and attributes follow OpenTelemetry's RPC conventions (``rpc.system``, ``rpc.service``,
``rpc.method``, ``rpc.grpc.status_code``; the span is named ``package.Service/Method``). A server
span is an error for the codes that mean the server failed (UNKNOWN, DEADLINE_EXCEEDED,
UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS); a client span for every code but OK.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mesh import correlation

_PROPAGATOR = TraceContextTextMapPropagator()
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}
CORRELATION_ATTRIBUTE = "huleedu.correlation_id"


class _MetadataGetter(Getter[Iterable[tuple[str, Any]]]):
    """Reads W3C headers from gRPC invocation metadata (a sequence of key/value pairs)."""

    def get(self, carrier: Iterable[tuple[str, Any]], key: str) -> list[str] | None:
        found = [v if isinstance(v, str) else v.decode() for k, v in carrier if k == key]
        return found or None

    def keys(self, carrier: Iterable[tuple[str, Any]]) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _MetadataGetter()


def _attributes(full_method: str) -> dict[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def _code(value: Any) -> grpc.StatusCode:
    """A status code from what ``ServicerContext.code()`` returns (None, an enum or an int)."""
    if value is None:
        return grpc.StatusCode.OK
    if isinstance(value, grpc.StatusCode):
        return value
    return _BY_VALUE.get(int(value), grpc.StatusCode.UNKNOWN)


def _finish_server(span: trace.Span, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    code = _code(context.code())
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    cid = correlation.correlation_id.get()
    if cid:
        span.set_attribute(CORRELATION_ATTRIBUTE, cid)
    if code in _SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {context.details() or ''}"))


def traced_handler(
    tracer: trace.Tracer, handler: grpc.RpcMethodHandler[Any, Any], full_method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` (already wrapped by the server's wrapper) inside a server span."""
    name = full_method.lstrip("/")
    attributes = _attributes(full_method)
    options: dict[str, Any] = {
        "kind": SpanKind.SERVER,
        "attributes": attributes,
        "record_exception": False,  # the wrapper maps every error; only cancellation escapes
        "set_status_on_exception": False,
    }
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary

        async def traced_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            parent = _PROPAGATOR.extract(context.invocation_metadata() or (), getter=_GETTER)
            with tracer.start_as_current_span(name, context=parent, **options) as span:
                try:
                    return await unary(request, context)
                finally:
                    _finish_server(span, context)

        return grpc.unary_unary_rpc_method_handler(
            traced_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        stream: Any = handler.unary_stream

        async def traced_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            parent = _PROPAGATOR.extract(context.invocation_metadata() or (), getter=_GETTER)
            with tracer.start_as_current_span(name, context=parent, **options) as span:
                try:
                    async for response in stream(request, context):
                        yield response
                finally:
                    _finish_server(span, context)

        return grpc.unary_stream_rpc_method_handler(
            traced_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


class _ClientSpans:
    """Starts a client span per call and ends it with the call's status code."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._ending: set[asyncio.Task[None]] = set()

    def start(
        self, details: grpc.aio.ClientCallDetails
    ) -> tuple[trace.Span, grpc.aio.ClientCallDetails]:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        span = self._tracer.start_span(
            method.lstrip("/"), kind=SpanKind.CLIENT, attributes=_attributes(method)
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *carrier.items())
        return span, grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    def end_when_done(self, span: trace.Span, call: Any) -> Any:
        def done(_call: object) -> None:
            task = asyncio.get_running_loop().create_task(self._end(span, call))
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

        call.add_done_callback(done)
        return call

    @staticmethod
    async def _end(span: trace.Span, call: Any) -> None:
        try:
            code = _code(await call.code())
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()


class _UnaryClient(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, spans: _ClientSpans) -> None:
        self._spans = spans

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        span, details = self._spans.start(client_call_details)
        return self._spans.end_when_done(span, await continuation(details, request))


class _StreamClient(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, spans: _ClientSpans) -> None:
        self._spans = spans

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        span, details = self._spans.start(client_call_details)
        return self._spans.end_when_done(span, await continuation(details, request))


def client_interceptors(tracer: trace.Tracer) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for a channel: a client span per unary and server-streaming call."""
    spans = _ClientSpans(tracer)
    return [_UnaryClient(spans), _StreamClient(spans)]
