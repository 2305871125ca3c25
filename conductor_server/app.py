"""Composition root of the PipelineConductor: builds every dependency, runs, shuts down in order.

Resources are entered into one ``AsyncExitStack`` in dependency order (PostgreSQL, Redis, Kafka
producer, outbox relay, consumer, gRPC server), so they close in the reverse: the server drains
first (health NOT_SERVING, no new RPCs, in-flight ones finish), then the consumer finishes its
batch and commits, then the relay, the producer (Kafka), Redis and PostgreSQL close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from conductor_server import events
from conductor_server.api.servicer import ConductorServicer
from conductor_server.api.status import TABLE
from conductor_server.domain.errors import DefinitionError
from conductor_server.intake import ACCEPTED, OutcomeIntake
from conductor_server.metrics import ConductorMetrics
from conductor_server.pipeline_rules import PipelineRules, definitions_at
from conductor_server.service import CompletionAnnouncer, Conductor
from conductor_server.settings import ConductorSettings
from generated.huleedu.conductor.v1 import conductor_pb2, conductor_pb2_grpc
from mesh import backends
from mesh.bus import EventConsumer, OutgoingEvent
from mesh.consumer import Consumer, ConsumerConfig
from mesh.consumer_metrics import ConsumerMetrics
from mesh.health import HealthReporter, Probe
from mesh.memory_bus import MemoryBus
from mesh.outbox import enqueue
from mesh.runtime import Background, StartupError, stop_loop, until_stopped
from mesh.schema import apply_migrations
from mesh.server import GrpcServer
from mesh.settings import Mode
from mesh.topics import EventKind

log = logging.getLogger(__name__)

SERVICE_NAME = conductor_pb2.DESCRIPTOR.services_by_name["PipelineConductorService"].full_name
MIGRATIONS = {"mesh": "mesh.sql", "conductor": "conductor_server.sql"}


class OutboxPublisher:
    """An ``EventPublisher`` that writes events to the outbox in their own transaction."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def publish(self, event: OutgoingEvent) -> None:
        await self.publish_many([event])

    async def publish_many(self, events_: Sequence[OutgoingEvent]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await enqueue(conn, events_)


@dataclass
class Wiring:
    """What the mode-specific part of start-up produces."""

    conductor: Conductor
    consumer: EventConsumer
    probes: dict[str, Probe] = field(default_factory=dict)
    background: list[Background] = field(default_factory=list)  # loops beside the server


def load_rules(settings: ConductorSettings, metrics: ConductorMetrics) -> PipelineRules:
    try:
        return PipelineRules.load(definitions_at(settings.options.pipelines_path), metrics)
    except DefinitionError as exc:
        raise StartupError(str(exc)) from exc


async def _embedded(
    settings: ConductorSettings, rules: PipelineRules, bus: MemoryBus | None
) -> Wiring:
    from conductor_server.state.memory import MemoryStateStore

    bus = bus or MemoryBus(settings.backends.kafka_namespace)
    store = MemoryStateStore(rules.catalog.steps)
    announcer = CompletionAnnouncer(bus, store.succeeded_essays)
    conductor = Conductor(rules, store, events_out=bus, completions=announcer)
    consumer = bus.consumer(
        settings.options.consumer_group,
        [EventKind.ESSAY_STEP_OUTCOME],
        OutcomeIntake(conductor),
        service=events.SOURCE_SERVICE,
        accept=ACCEPTED,
    )
    return Wiring(conductor, consumer)


async def _real(
    settings: ConductorSettings,
    rules: PipelineRules,
    stack: AsyncExitStack,
    registry: CollectorRegistry,
) -> Wiring:
    from conductor_server.state.composed import ComposedStateStore
    from conductor_server.state.postgres_store import PostgresStateStore
    from conductor_server.state.redis_store import RedisStateStore

    b, o = settings.backends, settings.options
    pool = await backends.open_postgres(b.database_url, o.db_pool_size)
    stack.push_async_callback(backends.close_pool, pool)
    await apply_migrations(pool, MIGRATIONS)
    redis = await backends.open_redis(b.redis_url)
    stack.push_async_callback(redis.aclose)

    producer, relay = await backends.open_kafka(stack, pool, b, "conductor")

    steps = rules.catalog.steps
    store = ComposedStateStore(
        PostgresStateStore(pool, steps),
        RedisStateStore(redis, steps, ttl=timedelta(seconds=o.redis_ttl_seconds)),
    )
    conductor = Conductor(rules, store, events_out=OutboxPublisher(pool), completions=None)
    config = ConsumerConfig(
        bootstrap_servers=b.kafka_bootstrap,
        group_id=o.consumer_group,
        service=events.SOURCE_SERVICE,
        namespace=b.kafka_namespace,
        commit_interval_ms=b.kafka_commit_interval_ms,
        client_id="conductor",
    )
    consumer = Consumer(
        config,
        [EventKind.ESSAY_STEP_OUTCOME],
        OutcomeIntake(conductor),
        dead_letters=producer,
        accept=ACCEPTED,
        metrics=ConsumerMetrics(registry),
    )
    await backends.start_within("Kafka consumer", consumer.start, 30)
    probes = {"postgres": backends.postgres_probe(pool), "redis": backends.redis_probe(redis)}
    return Wiring(conductor, consumer, probes, [(relay.run, relay.stop)])


async def serve(
    settings: ConductorSettings,
    stop: asyncio.Event,
    bus: MemoryBus | None = None,
    on_ready: Callable[[GrpcServer], None] | None = None,
) -> None:
    """Run the conductor until ``stop`` is set (SIGTERM/SIGINT in the entry point)."""
    registry = CollectorRegistry()
    metrics = ConductorMetrics(registry)
    rules = load_rules(settings, metrics)
    mode = settings.backends.mode
    log.info("starting PipelineConductor in %s mode", mode.value)
    async with AsyncExitStack() as stack:
        if mode is Mode.EMBEDDED:
            wiring = await _embedded(settings, rules, bus)
        else:
            wiring = await _real(settings, rules, stack, registry)
        health = HealthReporter([SERVICE_NAME], wiring.probes)
        server = GrpcServer(
            settings.server,
            [
                lambda s: conductor_pb2_grpc.add_PipelineConductorServiceServicer_to_server(
                    ConductorServicer(wiring.conductor), s
                )
            ],
            [SERVICE_NAME],
            TABLE,
            registry,
            health,
        )
        loops = []
        for run, halt in wiring.background:  # stopped after the consumer (it feeds the relay)
            task = asyncio.create_task(run(), name=getattr(run, "__qualname__", "background"))
            stack.push_async_callback(stop_loop, halt, task)
            loops.append(task)
        consumer_task = asyncio.create_task(wiring.consumer.run(), name="outcome-consumer")
        stack.push_async_callback(backends.stop_consumer, wiring.consumer, consumer_task)
        await stack.enter_async_context(server)
        if on_ready is not None:
            on_ready(server)
        try:  # a loop that ends early shuts the server down and the process exits 1
            await until_stopped(stop, [consumer_task, *loops])
        finally:
            log.info("shutting down")
    log.info("PipelineConductor stopped")
