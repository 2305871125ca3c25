"""The BatchService's composition root: its backends and use cases, by mode, on the skeleton.

Embedded mode: the in-memory batch and content stores, which publish on the in-memory bus.
Real mode: PostgreSQL (migrations at start-up; the batch store with its outbox and the relay
that publishes it, the content store unless ``CONTENT_SERVICE_URL`` is set, and a ``LISTEN`` that
wakes watchers when another replica changes a run) and Kafka. Either mode uses the HTTP Content
Service when ``CONTENT_SERVICE_URL`` is set, and the conductor at ``CONDUCTOR_ADDRESS`` with the
BatchService's own credentials (``CONDUCTOR_API_KEY``, or a client certificate; not probed at
start-up: a conductor that is down makes the RPCs that need it fail UNAVAILABLE, nothing
else). The server consumes ``BatchStepCompleted`` events and serves ``BatchService`` behind its
trust boundary (``mesh.security.boundary``; scopes from ``api/scopes.py``) with
``mesh.app.run_app``; on shutdown open watch streams end first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack

from prometheus_client import CollectorRegistry

from batch_server import consumer
from batch_server.api.scopes import SCOPES
from batch_server.api.servicer import SERVICE_NAME, BatchServicer, register
from batch_server.api.status import TABLE
from batch_server.conductor import Conductor
from batch_server.content.http import HttpContentStore
from batch_server.content.memory import MemoryContentStore
from batch_server.content.postgres import PostgresContentStore
from batch_server.deadlines import DeadlineWatch
from batch_server.events import SOURCE_SERVICE
from batch_server.metrics import BatchMetrics
from batch_server.monitor import RunMonitor
from batch_server.ports import BatchStore, ContentStore
from batch_server.service import BatchService, utc_now
from batch_server.settings import BatchSettings
from batch_server.store.memory import MemoryBatchStore
from batch_server.store.postgres import MIGRATIONS, PROGRESS_CHANNEL, PostgresBatchStore
from batch_server.watch import ProgressFeed
from clients.channel import Credentials
from clients.conductor import ConductorClient
from mesh import app
from mesh.events.bus import Bus
from mesh.events.deadletter import PayloadVault
from mesh.grpc.health import Probe
from mesh.grpc.server import GrpcServer
from mesh.postgres import pool as postgres
from mesh.postgres.listen import PgListener
from mesh.postgres.outbox import OutboxMetrics, OutboxRelay
from mesh.postgres.vault import PostgresPayloadVault
from mesh.runtime import Background, StartupError, start_within
from mesh.security.boundary import open_boundary
from mesh.security.tls import TlsError
from mesh.settings import Mode
from mesh.tracing.provider import Tracing, open_tracing

LISTEN_TIMEOUT = 10.0


async def serve(
    settings: BatchSettings,
    stop: asyncio.Event,
    bus: Bus | None = None,
    on_ready: Callable[[GrpcServer], None] | None = None,
    tracing: Tracing | None = None,
    shared_content: ContentStore | None = None,
) -> None:
    """Run the BatchService until ``stop`` is set (SIGTERM/SIGINT in the entry point).

    ``bus``: the event bus to use (the launcher shares one between both servers); by default
    the mode's own. ``on_ready`` is called with the running server (its bound ``port`` and
    ``metrics_port``) once it serves. ``tracing``: the tracer to use (the caller's to close);
    by default the ``OTEL_*`` settings'. ``shared_content``: the content store to use instead
    of the mode's own (tests share one with the workers they play). Raises
    ``mesh.runtime.StartupError`` when a backend cannot be reached at start-up.
    """
    registry = CollectorRegistry()
    metrics = BatchMetrics(registry)
    b, o = settings.backends, settings.options
    feed = ProgressFeed(o.watch_poll_seconds)
    async with AsyncExitStack() as stack:
        if tracing is None:
            tracing = open_tracing(settings.telemetry, SOURCE_SERVICE)
            stack.push_async_callback(asyncio.to_thread, tracing.close)
        if bus is None:
            bus = await stack.enter_async_context(app.open_bus(b, "batch-service", registry))
        probes: dict[str, Probe] = {}
        vault: PayloadVault | None = None
        loops: list[Background] = []
        store: BatchStore
        content: ContentStore
        pool = None
        if b.mode is Mode.EMBEDDED:
            store, content = MemoryBatchStore(bus), MemoryContentStore()
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
            store = PostgresBatchStore(pool, o.kept_essays, metrics)
            content = PostgresContentStore(pool)
            relay = OutboxRelay(
                pool, bus, namespace=b.kafka_namespace, metrics=OutboxMetrics(registry)
            )
            loops.append((relay.run, relay.stop))
            # other replicas' run changes wake this one's watchers at once (they poll besides)
            listener = PgListener(pool, PROGRESS_CHANNEL, lambda run_id: feed.notify([run_id]))
            await start_within("PostgreSQL LISTEN", listener.start, LISTEN_TIMEOUT)
            stack.push_async_callback(listener.close)
            probes["postgres"] = postgres.probe(pool)
            vault = PostgresPayloadVault(pool)
        if o.content_service_url:
            http = await stack.enter_async_context(HttpContentStore(o.content_service_url))
            content, probes["content-service"] = http, http.probe
        if shared_content is not None:
            content = shared_content
        client = await stack.enter_async_context(_conductor_client(settings, tracing))
        boundary = await stack.enter_async_context(open_boundary(settings, pool))
        conductor = Conductor(client)
        service = BatchService(store, content, conductor, feed, metrics=metrics, tracing=tracing)
        monitor = RunMonitor(store, metrics)
        deadlines = DeadlineWatch(
            store,
            conductor,
            utc_now,
            interval=o.deadline_poll_seconds,
            metrics=metrics,
        )
        loops += [(monitor.run, monitor.stop), (deadlines.run, deadlines.stop)]
        await app.run_app(
            app.App(
                name="BatchService",
                services=[SERVICE_NAME],
                registrations=[register(BatchServicer(service))],
                table=TABLE,
                scopes=SCOPES,
                probes=probes,
                consumers=[
                    bus.consumer(
                        o.consumer_group,
                        consumer.CONSUMED,
                        tracing.consumer(
                            consumer.CompletionHandler(
                                store, feed, metrics=metrics, tracing=tracing
                            )
                        ),
                        service=SOURCE_SERVICE,
                        accept=consumer.ACCEPTED,
                        vault=vault,
                    )
                ],
                loops=loops,
                on_shutdown=[feed.close],
                tracing=tracing,
            ),
            settings.server,
            registry,
            stop,
            on_ready,
            boundary,
        )


def _conductor_client(settings: BatchSettings, tracing: Tracing) -> ConductorClient:
    """The client of the conductor, with the BatchService's own credentials."""
    o = settings.options
    credentials = Credentials(
        api_key=o.conductor_api_key,
        tls=o.conductor_tls,
        ca_file=o.conductor_ca_file,
        cert_file=o.conductor_cert_file,
        key_file=o.conductor_key_file,
        server_name=o.conductor_server_name,
    )
    try:
        return ConductorClient(
            o.conductor_address,
            o.conductor_timeout_seconds,
            credentials,
            tracer_provider=tracing.provider,
        )
    except TlsError as exc:
        raise StartupError(f"the conductor's TLS settings (CONDUCTOR_CLIENT_*): {exc}") from exc
