"""Composition root of the BatchService: builds every dependency, runs, shuts down in order.

Embedded mode (no backend configured): in-memory batch store and content store, and the
in-memory bus (the launcher passes the one it shares with the conductor). Real mode: PostgreSQL
(migrations at start-up; batch store, content store unless ``CONTENT_SERVICE_URL`` is set, outbox,
LISTEN for watchers) and Kafka (producer, outbox relay, BatchStepCompleted consumer). Either mode
uses the HTTP Content Service when ``CONTENT_SERVICE_URL`` is set, and the conductor at
``CONDUCTOR_ADDRESS`` (not probed at start-up: a conductor that is down makes the RPCs that need
it fail UNAVAILABLE, nothing else).

Resources enter one ``AsyncExitStack`` in dependency order, so they close in reverse: watchers
are told to reconnect, the gRPC server drains (health NOT_SERVING, no new RPCs, in-flight ones
finish), the consumer finishes its batch and commits, then the relay, the producer (Kafka) and
PostgreSQL close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from batch_server.api.servicer import SERVICE_NAME, BatchServicer, register
from batch_server.api.status import TABLE
from batch_server.completions import ACCEPT, CompletionHandler
from batch_server.conductor import Conductor
from batch_server.content.http import HttpContentStore
from batch_server.content.memory import MemoryContentStore
from batch_server.events import SOURCE_SERVICE
from batch_server.ports import BatchStore, ContentStore
from batch_server.service import BatchService
from batch_server.settings import BatchSettings
from batch_server.watch import ProgressFeed
from clients.conductor import ConductorClient
from mesh import backends
from mesh.bus import EventConsumer
from mesh.consumer import Consumer, ConsumerConfig
from mesh.consumer_metrics import ConsumerMetrics
from mesh.health import HealthReporter, Probe
from mesh.memory_bus import MemoryBus
from mesh.pg_listen import PgListener
from mesh.runtime import Background, stop_loop, until_stopped
from mesh.schema import apply_migrations
from mesh.server import GrpcServer
from mesh.settings import Mode
from mesh.topics import EventKind

log = logging.getLogger(__name__)

MIGRATIONS = {"mesh": "mesh.sql", "batch": "batch_server.sql"}
CONSUMED = [EventKind.BATCH_STEP_COMPLETED]


@dataclass
class Wiring:
    """What the mode-specific part of start-up produces."""

    store: BatchStore
    content: ContentStore | None  # None: use the HTTP content service
    consumer: Callable[[CompletionHandler], EventConsumer]
    probes: dict[str, Probe] = field(default_factory=dict)
    background: list[Background] = field(default_factory=list)  # loops beside the server


def _embedded(settings: BatchSettings, bus: MemoryBus | None) -> Wiring:
    from batch_server.store.memory import MemoryBatchStore

    memory = bus or MemoryBus(settings.backends.kafka_namespace)

    def consumer(handler: CompletionHandler) -> EventConsumer:
        return memory.consumer(
            settings.options.consumer_group,
            CONSUMED,
            handler,
            service=SOURCE_SERVICE,
            accept=ACCEPT,
        )

    return Wiring(MemoryBatchStore(memory), MemoryContentStore(), consumer)


async def _real(
    settings: BatchSettings,
    stack: AsyncExitStack,
    registry: CollectorRegistry,
    feed: ProgressFeed,
) -> Wiring:
    from batch_server.content.postgres import PostgresContentStore
    from batch_server.store.postgres import PROGRESS_CHANNEL, PostgresBatchStore

    b, o = settings.backends, settings.options
    pool = await backends.open_postgres(b.database_url, o.db_pool_size)
    stack.push_async_callback(backends.close_pool, pool)
    await backends.start_within(
        "PostgreSQL migrations", lambda: apply_migrations(pool, MIGRATIONS), 60
    )
    producer, relay = await backends.open_kafka(stack, pool, b, "batch-service")
    # other replicas' run changes wake this one's watchers at once (they poll besides)
    listener = PgListener(pool, PROGRESS_CHANNEL, lambda run_id: feed.notify([run_id]))
    await backends.start_within("PostgreSQL LISTEN", listener.start, 10)
    stack.push_async_callback(listener.close)

    config = ConsumerConfig(
        bootstrap_servers=b.kafka_bootstrap,
        group_id=o.consumer_group,
        service=SOURCE_SERVICE,
        namespace=b.kafka_namespace,
        commit_interval_ms=b.kafka_commit_interval_ms,
        client_id="batch-service",
    )

    def consumer(handler: CompletionHandler) -> EventConsumer:
        return Consumer(
            config,
            CONSUMED,
            handler,
            dead_letters=producer,
            accept=ACCEPT,
            metrics=ConsumerMetrics(registry),
        )

    return Wiring(
        PostgresBatchStore(pool),
        PostgresContentStore(pool),
        consumer,
        {"postgres": backends.postgres_probe(pool)},
        [(relay.run, relay.stop)],
    )


async def serve(
    settings: BatchSettings,
    stop: asyncio.Event,
    bus: MemoryBus | None = None,
    on_ready: Callable[[GrpcServer], None] | None = None,
) -> None:
    """Run the BatchService until ``stop`` is set (SIGTERM/SIGINT in the entry point).

    ``bus``: in embedded mode, the in-memory bus to use (the launcher shares one between both
    servers); a new one when None; ignored in real mode. ``on_ready`` is called with the
    running server (its bound ``port`` and ``metrics_port``) once it serves.
    Raises ``mesh.runtime.StartupError`` when a backend cannot be reached at start-up.
    """
    registry = CollectorRegistry()
    mode = settings.backends.mode
    options = settings.options
    log.info("starting BatchService in %s mode", mode.value)
    feed = ProgressFeed(options.watch_poll_seconds)
    async with AsyncExitStack() as stack:
        if mode is Mode.EMBEDDED:
            wiring = _embedded(settings, bus)
        else:
            wiring = await _real(settings, stack, registry, feed)
        content = wiring.content
        probes = dict(wiring.probes)
        if options.content_service_url:
            http = HttpContentStore(options.content_service_url)
            stack.push_async_callback(http.close)
            content, probes["content-service"] = http, http.probe
        assert content is not None
        client = ConductorClient(options.conductor_address, options.conductor_timeout_seconds)
        stack.push_async_callback(client.close)
        service = BatchService(wiring.store, content, Conductor(client), feed)
        loops = []
        for run, halt in wiring.background:  # stopped after the consumer (it feeds them)
            task = asyncio.create_task(run(), name=getattr(run, "__qualname__", "background"))
            stack.push_async_callback(stop_loop, halt, task)
            loops.append(task)
        consumer = wiring.consumer(CompletionHandler(wiring.store, feed))
        if isinstance(consumer, Consumer):
            await backends.start_within("Kafka consumer", consumer.start, 30)
        consumer_task = asyncio.create_task(consumer.run(), name="step-completed-consumer")
        stack.push_async_callback(backends.stop_consumer, consumer, consumer_task)
        server = GrpcServer(
            settings.server,
            [register(BatchServicer(service))],
            [SERVICE_NAME],
            TABLE,
            registry,
            HealthReporter([SERVICE_NAME], probes),
        )
        await stack.enter_async_context(server)
        stack.callback(feed.close)  # first on the way out: open watch streams end at once
        if on_ready is not None:
            on_ready(server)
        try:  # a loop that ends early shuts the server down and the process exits 1
            await until_stopped(stop, [consumer_task, *loops])
        finally:
            log.info("shutting down")
    log.info("BatchService stopped")
