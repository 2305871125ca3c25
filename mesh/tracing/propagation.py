"""The W3C trace context on Kafka records and in the current context.

A record carries its cause as a ``traceparent`` header (``00-<trace id>-<span id>-<flags>``);
``mesh.events.envelope.headers`` writes it, ``header`` reads it back from a consumed record.
Only ``traceparent`` crosses Kafka (``tracestate`` is not carried: nothing here sets one). The
value is opaque to everything but this module, so domain records can hold it as a plain string.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
_PROPAGATOR = TraceContextTextMapPropagator()  # stateless: formats and parses the header


def current() -> str:
    """The ``traceparent`` of the current span, or ``""`` when there is none."""
    return traceparent(trace.get_current_span().get_span_context())


def traceparent(span_context: trace.SpanContext) -> str:
    """The ``traceparent`` header value of ``span_context`` (``""`` when it is not valid)."""
    if not span_context.is_valid:
        return ""
    ids = f"{span_context.trace_id:032x}-{span_context.span_id:016x}"
    return f"00-{ids}-{span_context.trace_flags:02x}"


def header(headers: Sequence[tuple[str, bytes]]) -> str:
    """The ``traceparent`` of a consumed record's headers (``""`` when it has none)."""
    for name, value in headers:
        if name == TRACEPARENT:
            return value.decode("ascii", errors="replace")
    return ""


def context_of(value: str) -> otel_context.Context | None:
    """The context a ``traceparent`` names (its span as the remote parent); ``None`` for ``""``
    or a value that does not parse."""
    if not value:
        return None
    found = _PROPAGATOR.extract({TRACEPARENT: value})
    if not trace.get_current_span(found).get_span_context().is_valid:
        return None
    return found


@contextlib.contextmanager
def activated(value: str) -> Iterator[None]:
    """Make ``value`` (a ``traceparent``) the current context for the block: spans started and
    events built inside it are its children. No-op for ``""``."""
    found = context_of(value)
    if found is None:
        yield
        return
    token = otel_context.attach(found)
    try:
        yield
    finally:
        otel_context.detach(token)
