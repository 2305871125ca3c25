"""The server skeleton both services run on: a gRPC server with its consumers and loops.

A composition root opens its backends, builds its use cases and describes the server as an
``App``; ``run_app`` does the rest, the same way for both services:

1. background loops start (the outbox relay), and the consumers start joining their groups
   (in the background: ``mesh_consumer_assigned_partitions`` shows when they are in);
2. the gRPC server starts (health, reflection, the interceptor, the HTTP side port) behind the
   trust boundary the composition root opened (``mesh.security.boundary.open_boundary``) and
   turns SERVING once the backend probes pass, without waiting for the consumers; ``on_ready``
   is called with it;
3. it serves until ``stop`` is set or a loop ends on its own (``LoopEnded``: the process exits 1
   for its supervisor to restart it);
4. shutdown runs in reverse: the server drains (NOT_SERVING for ``DRAIN_SECONDS``, then the
   ``on_shutdown`` callbacks end open streams, new calls are refused, in-flight ones finish
   or end UNAVAILABLE), the consumers finish their batch, commit and leave, the loops finish
   what they are doing. The caller's exit stack then closes the backends.

``open_bus`` is the one place that picks the event bus by mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)

from mesh.events.bus import Bus, EventConsumer
from mesh.events.kafka import KafkaBus, KafkaConfig
from mesh.events.memory import MemoryBus
from mesh.events.security import KafkaSecurity
from mesh.grpc.health import HealthReporter, Probe
from mesh.grpc.server import GrpcServer, Registration
from mesh.grpc.status import StatusTable
from mesh.runtime import Background, StartupError, start_within, stop_loop, until_stopped
from mesh.security.boundary import TrustBoundary
from mesh.security.scopes import ScopeTable
from mesh.settings import BackendSettings, Mode, ServerSettings
from mesh.tracing.provider import OFF, Tracing

log = logging.getLogger(__name__)

CONSUMER_START_TIMEOUT = 30.0
BUS_START_TIMEOUT = 30.0


@dataclass
class App:
    """What one service contributes to the skeleton."""

    name: str  # for logs: "PipelineConductor", "BatchService"
    services: Sequence[str]  # full gRPC service names, for health and reflection
    registrations: Sequence[Registration]
    table: StatusTable
    scopes: ScopeTable  # every RPC's full name -> the scope it needs
    probes: Mapping[str, Probe] = field(default_factory=dict)
    optional: Collection[str] = ()  # probes whose backend the server can do without
    consumers: Sequence[EventConsumer] = ()
    loops: Sequence[Background] = ()
    on_shutdown: Sequence[Callable[[], None]] = ()  # when the drain stops accepting calls
    tracing: Tracing = OFF  # server spans around every RPC when on


def open_bus(
    backends: BackendSettings, client_id: str, registry: CollectorRegistry
) -> AbstractAsyncContextManager[Bus]:
    """The event bus of the configured mode: Kafka in real mode, else a new in-memory bus."""
    if backends.mode is Mode.EMBEDDED:
        return MemoryBus(backends.kafka_namespace)
    config = KafkaConfig(
        bootstrap_servers=backends.kafka_bootstrap,
        namespace=backends.kafka_namespace,
        client_id=client_id,
        partitions=backends.kafka_partitions,
        commit_interval_ms=backends.kafka_commit_interval_ms,
        fetch_max_wait_ms=backends.kafka_fetch_max_wait_ms,
        group_instance_id=backends.kafka_group_instance_id,
        security=KafkaSecurity.of(backends),
    )
    try:
        config.security.client_options()  # a wrong setting fails start-up, naming it
    except (ValueError, OSError) as exc:
        raise StartupError(f"Kafka security: {exc}") from exc
    return _started(KafkaBus(config, registry), "Kafka")


@contextlib.asynccontextmanager
async def _started(bus: KafkaBus, what: str):  # type: ignore[no-untyped-def]
    try:
        await start_within(what, bus.start, BUS_START_TIMEOUT)
        yield bus
    finally:
        await bus.close()


async def run_app(
    app: App,
    settings: ServerSettings,
    registry: CollectorRegistry,
    stop: asyncio.Event,
    on_ready: Callable[[GrpcServer], None] | None = None,
    boundary: TrustBoundary | None = None,
) -> None:
    """Serve ``app`` until ``stop`` is set (see the module docstring); ``boundary`` None serves
    without authentication or TLS (tests of the skeleton)."""
    log.info("starting %s", app.name)
    runtime_metrics(registry)
    async with AsyncExitStack() as stack:
        tasks: list[asyncio.Task[None]] = []
        for run, halt in app.loops:  # stopped after the consumers (which feed them)
            task = asyncio.create_task(run(), name=getattr(run, "__qualname__", "background"))
            stack.push_async_callback(stop_loop, halt, task)
            tasks.append(task)
        for consumer in app.consumers:  # they join their groups while the server already serves
            started = asyncio.Event()
            task = asyncio.create_task(
                _consume(consumer, started), name=f"{type(consumer).__name__}.run"
            )
            stack.push_async_callback(_stop_consumer, consumer, task, started)
            tasks.append(task)
        server = GrpcServer(
            settings,
            app.registrations,
            app.services,
            app.table,
            registry,
            HealthReporter(app.services, app.probes, optional=app.optional),
            app.scopes,
            boundary,
            on_drain=app.on_shutdown,
            tracing=app.tracing,
        )
        await stack.enter_async_context(server)
        if on_ready is not None:
            on_ready(server)
        try:  # a loop that ends early shuts the server down and the process exits 1
            await until_stopped(stop, tasks)
        finally:
            log.info("shutting down %s", app.name)
    log.info("%s stopped", app.name)


def runtime_metrics(registry: CollectorRegistry) -> None:
    """The process's CPU, memory, file descriptors and start time (``process_*``), the Python
    version (``python_info``) and the garbage collector's work (``python_gc_*``)."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


async def _consume(consumer: EventConsumer, started: asyncio.Event) -> None:
    await start_within("event consumer", consumer.start, CONSUMER_START_TIMEOUT)
    started.set()
    await consumer.run()


async def _stop_consumer(
    consumer: EventConsumer, task: asyncio.Task[None], started: asyncio.Event
) -> None:
    """Finish the batch in flight, commit it, leave the group; a consumer still joining its
    group (it may wait out a dead member's session) stops joining at once.

    A ``task`` that had already ended is not awaited: ``until_stopped`` raised its error.
    """
    ended = task.done()
    if not ended and not started.is_set():
        task.cancel()
    await consumer.stop()
    if not ended:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await consumer.close()
