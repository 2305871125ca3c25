"""``Tracing``: the tracer of one service, or none, and how a composition root opens it.

Tracing is on when the standard variables ask for an exporter (``OTEL_TRACES_EXPORTER``, or an
OTLP endpoint, ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and
``OTEL_SDK_DISABLED`` is not true; ``mesh.settings.TelemetrySettings`` holds those. The
OpenTelemetry SDK then reads the rest of its standard variables itself: the sampler
(``OTEL_TRACES_SAMPLER``), the batch processor (``OTEL_BSP_*``), the exporter's endpoint,
headers, protocol and timeouts (``OTEL_EXPORTER_OTLP_*``), resource attributes
(``OTEL_RESOURCE_ATTRIBUTES``). Exporters are found by name like the SDK's own auto-configuration
does (entry points ``opentelemetry_traces_exporter``): ``console`` ships with the SDK, ``otlp``
needs the ``otlp`` extra.

Each service gets a provider of its own (``make run`` runs two services in one process, each with
its ``service.name``); nothing is registered globally.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

import grpc
from opentelemetry import trace

from mesh.events.bus import BatchHandler
from mesh.runtime import StartupError
from mesh.settings import TelemetrySettings
from mesh.tracing import messaging, rpc

log = logging.getLogger(__name__)

INSTRUMENTATION = "huleedu.mesh"
_OTLP = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


class Tracing:
    """Spans of one service; with ``provider`` None (off) every hook is left out."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(INSTRUMENTATION) if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    def close(self) -> None:
        """Export what is buffered and stop the provider (idempotent). It blocks while the
        exporter flushes: from a coroutine, run it in a thread (``asyncio.to_thread``)."""
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()
            self.provider = None

    def server_handler(
        self, handler: grpc.RpcMethodHandler[Any, Any], full_method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``handler`` with a server span around every call (itself when off)."""
        if self.tracer is None:
            return handler
        return rpc.traced_handler(self.tracer, handler, full_method)

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """Interceptors that make client spans and send their context (none when off)."""
        return [] if self.tracer is None else rpc.client_interceptors(self.tracer)

    def consumer(self, handler: BatchHandler) -> BatchHandler:
        """``handler`` with a consumer span per message (itself when off)."""
        if self.tracer is None:
            return handler
        return messaging.TracedHandler(self.tracer, handler)

    def creating(
        self, destination: str, attributes: Mapping[str, str | int] | None = None
    ) -> contextlib.AbstractContextManager[Any]:
        """A ``create <destination>`` span, current for the block: an event built inside it has
        it as its cause (a no-op context when off)."""
        if self.tracer is None:
            return _OFF
        return messaging.creating(self.tracer, destination, attributes or {})


OFF = Tracing()  # stateless when off: no provider, no tracer


def open_tracing(settings: TelemetrySettings, service_name: str) -> Tracing:
    """The service's ``Tracing`` as ``settings`` ask (off unless an exporter is asked for).

    Raises ``StartupError`` naming the variable when an exporter is unknown or not installed.
    """
    names = settings.exporters
    if not names:
        return OFF
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: settings.service_name or service_name})
    provider = TracerProvider(resource=resource)
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, settings.otlp_protocol)))
    log.info("tracing on: %s exporting to %s", settings.service_name or service_name, names)
    return Tracing(provider)


def _exporter(name: str, protocol: str) -> Any:
    found = _OTLP.get(protocol or "grpc", name) if name == "otlp" else name
    matches = entry_points(group="opentelemetry_traces_exporter", name=found)
    if not matches:
        hint = " (install the otlp extra: pip install 'huleedu-pipeline-mesh[otlp]')"
        raise StartupError(
            f"OTEL_TRACES_EXPORTER={name}: no span exporter {found!r} is installed"
            + (hint if name.startswith("otlp") else "")
        )
    try:
        return next(iter(matches)).load()()
    except Exception as exc:
        raise StartupError(f"OTEL_TRACES_EXPORTER={name}: {exc!r}") from exc
