"""One run is one trace on the real path: outbox rows, the relay, Kafka headers, consumers.

Both servers run in real mode (PostgreSQL, Redis, Kafka) in this process, with the demo workers
on the same Kafka bus; each has its own provider over one in-memory exporter. The events wait in
the transactional outbox before the relay publishes them, so their trace context must be the one
they were built in (stored with the row), not the relay's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from batch_server.app import serve as serve_batch
from batch_server.settings import BatchOptions, BatchSettings
from conductor_server.app import serve as serve_conductor
from conductor_server.settings import ConductorSettings
from launcher.workers import ACCEPTED, COMMANDS, GROUP, DemoWorkers
from mesh.events.kafka import KafkaBus, KafkaConfig
from mesh.grpc.server import GrpcServer
from mesh.settings import BackendSettings, SecuritySettings, ServerSettings
from tests.support.tracing import (
    BATCH,
    CLIENT,
    CONDUCTOR,
    WORKERS,
    check_run_trace,
    memory_tracing,
    traced_run,
)

SERVER = ServerSettings(host="127.0.0.1", grpc_port=0, metrics_port=-1, uvloop=False)
OPEN = SecuritySettings(auth_disabled=True)  # tests/security tests the boundary


async def _started(
    serve: Any, settings: Any, stop: asyncio.Event, **kw: Any
) -> tuple[asyncio.Task[None], GrpcServer]:
    ready: asyncio.Future[GrpcServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop, on_ready=ready.set_result, **kw))
    done, _ = await asyncio.wait({task, ready}, timeout=90, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, "server did not start in time"
    return task, ready.result()


@pytest.fixture
async def real_mesh(
    database_url: str, redis_url: str, kafka_bootstrap: str, kafka_namespace: str
) -> AsyncIterator[tuple[str, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    backends = BackendSettings(
        redis_url=redis_url,
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        kafka_namespace=kafka_namespace,
        kafka_partitions=1,
        kafka_commit_interval_ms=100,
    )
    bus = KafkaBus(KafkaConfig(kafka_bootstrap, namespace=kafka_namespace, partitions=1))
    await bus.start()
    stop = asyncio.Event()
    conductor_task, conductor = await _started(
        serve_conductor,
        ConductorSettings(server=SERVER, backends=backends, security=OPEN),
        stop,
        bus=bus,
        tracing=memory_tracing(exporter, CONDUCTOR),
    )
    batch_task, batch = await _started(
        serve_batch,
        BatchSettings(
            server=SERVER,
            backends=backends,
            options=BatchOptions(conductor_address=f"127.0.0.1:{conductor.port}"),
            security=OPEN,
        ),
        stop,
        bus=bus,
        tracing=memory_tracing(exporter, BATCH),
    )
    workers = bus.consumer(
        GROUP,
        COMMANDS,
        memory_tracing(exporter, WORKERS).consumer(DemoWorkers(bus, namespace=kafka_namespace)),
        service=GROUP,
        accept=ACCEPTED,
    )
    await workers.start()
    running = asyncio.create_task(workers.run())
    try:
        yield f"127.0.0.1:{batch.port}", exporter
    finally:
        await workers.stop()
        await running
        await workers.close()
        stop.set()
        await asyncio.wait_for(asyncio.gather(batch_task, conductor_task), 60)
        await bus.close()


async def test_a_run_through_the_outbox_and_kafka_is_one_trace(
    real_mesh: tuple[str, InMemorySpanExporter], kafka_namespace: str
) -> None:
    address, exporter = real_mesh
    trace_id = await traced_run(address, memory_tracing(exporter, CLIENT), within=120)
    check_run_trace(exporter.get_finished_spans(), trace_id, namespace=kafka_namespace)
