"""One run is one trace: a 3-essay ``comprehensive`` run in embedded mode, in one process.

Both servers and the demo workers share the in-memory bus, which carries the same headers as
Kafka: the trace context crosses every event through the ``traceparent`` header, exactly as on
the Kafka path (``tests/integration/test_tracing_kafka.py`` runs the same check there).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from batch_server.app import serve as serve_batch
from conductor_server.app import serve as serve_conductor
from conductor_server.settings import ConductorSettings
from launcher.workers import ACCEPTED, COMMANDS, GROUP, DemoWorkers
from mesh.events.memory import MemoryBus
from mesh.grpc.server import GrpcServer
from mesh.settings import BackendSettings, ServerSettings
from tests.support.batch import settings_for
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


async def _started(
    serve: object, settings: object, stop: asyncio.Event, **kw: object
) -> tuple[asyncio.Task[None], GrpcServer]:
    ready: asyncio.Future[GrpcServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop, on_ready=ready.set_result, **kw))  # type: ignore[operator]
    done, _ = await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done
    return task, ready.result()


@pytest.fixture
async def mesh() -> AsyncIterator[tuple[str, InMemorySpanExporter]]:
    """Both servers and the demo workers, each traced into one in-memory exporter."""
    exporter = InMemorySpanExporter()
    bus, stop = MemoryBus(), asyncio.Event()
    conductor_task, conductor = await _started(
        serve_conductor,
        ConductorSettings(server=SERVER, backends=BackendSettings()),
        stop,
        bus=bus,
        tracing=memory_tracing(exporter, CONDUCTOR),
    )
    batch_task, batch = await _started(
        serve_batch,
        settings_for(f"127.0.0.1:{conductor.port}"),
        stop,
        bus=bus,
        tracing=memory_tracing(exporter, BATCH),
    )
    workers = bus.consumer(
        GROUP,
        COMMANDS,
        memory_tracing(exporter, WORKERS).consumer(DemoWorkers(bus)),
        service=GROUP,
        accept=ACCEPTED,
    )
    running = asyncio.create_task(workers.run())
    try:
        yield f"127.0.0.1:{batch.port}", exporter
    finally:
        await workers.stop()
        await running
        stop.set()
        await asyncio.wait_for(asyncio.gather(batch_task, conductor_task), 30)


async def test_a_comprehensive_run_is_one_trace(mesh: tuple[str, InMemorySpanExporter]) -> None:
    address, exporter = mesh
    trace_id = await traced_run(address, memory_tracing(exporter, CLIENT))
    trace = check_run_trace(exporter.get_finished_spans(), trace_id)
    for span in trace.spans:  # nothing of the run failed
        assert span.status.status_code is not StatusCode.ERROR, span.name
    served = [s for s in trace.spans if s.kind == SpanKind.SERVER]
    assert {s.attributes["rpc.grpc.status_code"] for s in served if s.attributes} == {0}


async def test_server_spans_name_the_failure(mesh: tuple[str, InMemorySpanExporter]) -> None:
    """A call that fails on the server is an error span there, with its status code."""
    address, exporter = mesh
    client_tracing = memory_tracing(exporter, CLIENT)
    from clients import BatchClient, RpcError

    async with BatchClient(address, tracer_provider=client_tracing.provider) as client:
        with pytest.raises(RpcError):
            await client.get_batch_status("no-such-batch")
    [served] = [
        s
        for s in exporter.get_finished_spans()
        if s.name == "huleedu.batch.v1.BatchService/GetBatchStatus" and s.kind == SpanKind.SERVER
    ]
    [called] = [
        s
        for s in exporter.get_finished_spans()
        if s.name == "huleedu.batch.v1.BatchService/GetBatchStatus" and s.kind == SpanKind.CLIENT
    ]
    assert served.attributes is not None
    assert called.attributes is not None
    assert served.attributes["rpc.grpc.status_code"] == 5  # NOT_FOUND: the caller's fault
    assert served.status.status_code is not StatusCode.ERROR
    assert called.attributes["rpc.grpc.status_code"] == 5
    assert called.status.status_code is StatusCode.ERROR
    assert served.parent is not None
    assert called.context is not None
    assert served.parent.span_id == called.context.span_id
    assert served.attributes["huleedu.correlation_id"]
