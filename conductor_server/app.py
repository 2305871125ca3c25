"""The PipelineConductor's composition root: its backends and use cases, by mode, on the skeleton.

Embedded mode: the in-memory state store, which publishes completions on the in-memory bus.
Real mode: PostgreSQL (migrations at start-up; the state store and its outbox, with the relay
that publishes it), Redis (the mirror the reads come from) and Kafka. Either way the server
consumes ``EssayStepOutcome`` events and serves ``PipelineConductorService`` behind its trust
boundary (``mesh.security.boundary``: keys, scopes from ``api/scopes.py``, TLS, limits)
(``mesh.app.run_app`` runs it and shuts it down in order). Resources close in the reverse of
the order they were opened here, after the server has drained.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import timedelta

from prometheus_client import CollectorRegistry

from conductor_server import consumer
from conductor_server.api.scopes import SCOPES
from conductor_server.api.servicer import SERVICE_NAME, ConductorServicer, register
from conductor_server.api.status import TABLE
from conductor_server.domain.counting import StepTable
from conductor_server.domain.errors import DefinitionError
from conductor_server.events import SOURCE_SERVICE
from conductor_server.metrics import ConductorMetrics
from conductor_server.ports import StateStore
from conductor_server.rules import PipelineRules, definitions_at
from conductor_server.service import Conductor
from conductor_server.settings import ConductorSettings
from conductor_server.store.composed import ComposedStateStore
from conductor_server.store.memory import MemoryStateStore
from conductor_server.store.postgres import MIGRATIONS, PostgresStateStore
from conductor_server.store.redis_mirror import RedisMirror, redis_client
from mesh import app
from mesh.events.bus import Bus, EventPublisher
from mesh.events.deadletter import PayloadVault
from mesh.grpc.health import Probe
from mesh.grpc.server import GrpcServer
from mesh.postgres import pool as postgres
from mesh.postgres.outbox import OutboxMetrics, OutboxPublisher, OutboxRelay
from mesh.postgres.vault import PostgresPayloadVault
from mesh.runtime import Background, StartupError
from mesh.security.boundary import open_boundary
from mesh.settings import Mode
from mesh.tracing.provider import Tracing, open_tracing


def load_rules(settings: ConductorSettings, metrics: ConductorMetrics) -> PipelineRules:
    try:
        return PipelineRules.load(definitions_at(settings.options.pipelines_path), metrics)
    except DefinitionError as exc:
        raise StartupError(str(exc)) from exc


async def serve(
    settings: ConductorSettings,
    stop: asyncio.Event,
    bus: Bus | None = None,
    on_ready: Callable[[GrpcServer], None] | None = None,
    tracing: Tracing | None = None,
) -> None:
    """Run the conductor until ``stop`` is set (SIGTERM/SIGINT in the entry point).

    ``bus``: the event bus to use (the launcher shares one between both servers); by default
    the mode's own. ``on_ready`` is called with the running server once it serves.
    ``tracing``: the tracer to use (the caller's to close); by default the ``OTEL_*`` settings'.
    """
    registry = CollectorRegistry()
    metrics = ConductorMetrics(registry)
    rules = load_rules(settings, metrics)
    b, o = settings.backends, settings.options
    async with AsyncExitStack() as stack:
        if tracing is None:
            tracing = open_tracing(settings.telemetry, SOURCE_SERVICE)
            stack.push_async_callback(asyncio.to_thread, tracing.close)
        if bus is None:
            bus = await stack.enter_async_context(app.open_bus(b, "conductor", registry))
        probes: dict[str, Probe] = {}
        vault: PayloadVault | None = None
        loops: list[Background] = []
        store: StateStore
        events_out: EventPublisher
        pool = None
        if b.mode is Mode.EMBEDDED:
            store = MemoryStateStore(rules.catalog.steps, events_out=bus)
            events_out = bus
        else:
            pool = await stack.enter_async_context(
                postgres.postgres_pool(
                    b.database_url,
                    o.db_pool_size,
                    MIGRATIONS,
                    b.kafka_namespace,
                    password=b.database_password,
                    tls_ca_file=b.database_tls_ca_file,
                )
            )
            redis = await stack.enter_async_context(
                redis_client(
                    b.redis_url, password=b.redis_password, tls_ca_file=b.redis_tls_ca_file
                )
            )
            table = StepTable(rules.catalog.steps)
            mirror = await stack.enter_async_context(
                RedisMirror(redis, table, ttl=timedelta(seconds=o.redis_ttl_seconds))
            )
            store = await stack.enter_async_context(
                ComposedStateStore(
                    PostgresStateStore(pool, rules.catalog.steps, o.kept_essays, metrics),
                    mirror,
                )
            )
            events_out = OutboxPublisher(pool)
            relay = OutboxRelay(
                pool, bus, namespace=b.kafka_namespace, metrics=OutboxMetrics(registry)
            )
            loops.append((relay.run, relay.stop))
            probes = {"postgres": postgres.probe(pool), "redis": mirror.probe}
            vault = PostgresPayloadVault(pool)
        boundary = await stack.enter_async_context(open_boundary(settings, pool))
        conductor = Conductor(rules, store, events_out)
        await app.run_app(
            app.App(
                name="PipelineConductor",
                services=[SERVICE_NAME],
                registrations=[register(ConductorServicer(conductor))],
                table=TABLE,
                scopes=SCOPES,
                probes=probes,
                optional=["redis"],  # PostgreSQL answers in its place
                consumers=[
                    bus.consumer(
                        o.consumer_group,
                        consumer.CONSUMED,
                        tracing.consumer(consumer.OutcomeIntake(conductor, metrics)),
                        service=SOURCE_SERVICE,
                        accept=consumer.ACCEPTED,
                        vault=vault,
                    )
                ],
                loops=loops,
                tracing=tracing,
            ),
            settings.server,
            registry,
            stop,
            on_ready,
            boundary,
        )
