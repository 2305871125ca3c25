"""``batch_server.app.serve`` in real mode: PostgreSQL (migrations, outbox) and Kafka.

A conductor runs in embedded mode beside it, for RegisterBatch and ResolvePipeline only; this test
plays the conductor's Kafka side by publishing BatchStepCompleted itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2 as details
from grpc_health.v1 import health_pb2, health_pb2_grpc

from batch_server.app import serve
from batch_server.settings import BatchOptions, BatchSettings
from clients import BatchClient, RpcError
from conductor_server.app import serve as serve_conductor
from conductor_server.settings import ConductorSettings
from generated.huleedu.batch.v1 import batch_pb2 as pb
from generated.huleedu.events.v1 import events_pb2 as ev
from mesh.events import envelope
from mesh.events.admin import read_topic
from mesh.events.bus import OutgoingEvent, OutgoingRecord
from mesh.events.producer import Producer
from mesh.events.topics import EventKind, dlq_topic, topic_name
from mesh.grpc.server import GrpcServer
from mesh.runtime import StartupError
from mesh.settings import BackendSettings, SecuritySettings, ServerSettings
from tests.support.polling import eventually

SERVER = ServerSettings(host="127.0.0.1", grpc_port=0, metrics_port=0, uvloop=False)


async def _serving(
    run: Callable[[asyncio.Event, Callable[[GrpcServer], None]], Coroutine[Any, Any, None]],
) -> tuple[asyncio.Event, asyncio.Task[None], GrpcServer]:
    stop = asyncio.Event()
    ready: asyncio.Future[GrpcServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run(stop, ready.set_result))
    waiting: set[asyncio.Future[Any]] = {task, ready}
    done, _ = await asyncio.wait(waiting, timeout=90, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, "server did not start in time"
    return stop, task, ready.result()


@pytest.fixture
async def conductor_address() -> AsyncIterator[str]:
    settings = ConductorSettings(server=SERVER, backends=BackendSettings())
    stop, task, server = await _serving(
        lambda stop, ready: serve_conductor(settings, stop, on_ready=ready)
    )
    yield f"127.0.0.1:{server.port}"
    stop.set()
    await asyncio.wait_for(task, 30)


@pytest.fixture
def real_settings(
    conductor_address: str,
    database_url: str,
    redis_url: str,
    kafka_bootstrap: str,
    kafka_namespace: str,
) -> BatchSettings:
    return BatchSettings(
        server=SERVER,
        backends=BackendSettings(
            redis_url=redis_url,
            database_url=database_url,
            kafka_bootstrap=kafka_bootstrap,
            kafka_namespace=kafka_namespace,
            kafka_partitions=1,
        ),
        security=SecuritySettings(auth_disabled=True),  # tests/security tests the boundary
        options=BatchOptions(
            conductor_address=conductor_address,
            consumer_group=f"{kafka_namespace}-batch",
            watch_poll_seconds=0.2,
        ),
    )


async def _events(bootstrap: str, namespace: str, kind: EventKind) -> list[ev.EventEnvelope]:
    records = await read_topic(bootstrap, topic_name(kind, namespace))
    return [envelope.decode(r.value) for r in records]


async def test_real_mode_end_to_end_over_postgres_and_kafka(
    real_settings: BatchSettings, kafka_bootstrap: str, kafka_namespace: str
) -> None:
    ns = kafka_namespace
    stop, task, server = await _serving(
        lambda stop, ready: serve(real_settings, stop, on_ready=ready)
    )
    try:
        async with BatchClient(f"127.0.0.1:{server.port}") as client:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)  # type: ignore[attr-defined]
                assert answer.status == health_pb2.HealthCheckResponse.SERVING

            triggered = await client.trigger_spellcheck("Teh text.")

            async def requested() -> bool:
                found = await _events(kafka_bootstrap, ns, EventKind.ESSAY_SPELLCHECK_REQUESTED)
                return [e.essay_spellcheck_requested.entity_ref.entity_id for e in found] == [
                    triggered.essay_id
                ]

            await eventually(requested, 60, what="the spellcheck request to be published")

            batch = await client.create_batch(["One.", "Two."], request_id="r1")
            assert (await client.create_batch(["One.", "Two."], request_id="r1")) == batch
            started = await client.start_pipeline(batch.batch_id, "spellcheck")
            topic = EventKind.SPELLCHECK_COMMAND

            async def dispatched() -> bool:
                return len(await _events(kafka_bootstrap, ns, topic)) == 1

            await eventually(dispatched, 60, what="the spellcheck command to be published")
            [command] = await _events(kafka_bootstrap, ns, topic)
            assert command.step_command.run_id == started.run.run_id

            completed = ev.BatchStepCompleted(
                batch_id=batch.batch_id,
                step="spellcheck",
                succeeded=2,
                total=2,
                satisfied=True,
                succeeded_essays=[
                    ev.EssayRef(essay_id=e.essay_id, text_storage_id=f"fixed-{e.essay_id}")
                    for e in batch.essays
                ],
            )
            built = envelope.build(completed, source_service="test", event_id="done-1")
            async with Producer(kafka_bootstrap, namespace=ns) as producer:
                event = OutgoingEvent(EventKind.BATCH_STEP_COMPLETED, built)
                await producer.publish_many([event, event])  # and a duplicate
                topic_done = topic_name(EventKind.BATCH_STEP_COMPLETED, ns)
                await producer.write([OutgoingRecord(topic_done, b"\x00garbage", b"k")])

            async def run_ended() -> bool:
                status = await client.get_batch_status(batch.batch_id)
                return status.runs[0].status == pb.RUN_STATUS_COMPLETED

            await eventually(run_ended, 60, what="the run to complete")
            status = await client.get_batch_status(batch.batch_id)
            assert [e.current_storage_id for e in status.batch.essays] == [
                f"fixed-{e.essay_id}" for e in batch.essays
            ]

            async def announced() -> bool:
                found = await _events(kafka_bootstrap, ns, EventKind.PIPELINE_RUN_COMPLETED)
                return len(found) == 1

            await eventually(announced, 60, what="the run's end to be announced")

            async def dead_lettered() -> bool:
                topic = dlq_topic(topic_name(EventKind.BATCH_STEP_COMPLETED, ns))
                return len(await read_topic(kafka_bootstrap, topic)) == 1

            await eventually(dead_lettered, 60, what="the garbage record to be dead-lettered")
            assert len(await _events(kafka_bootstrap, ns, EventKind.SPELLCHECK_COMMAND)) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_an_unreachable_database_fails_start_up(real_settings: BatchSettings) -> None:
    import dataclasses

    broken = dataclasses.replace(
        real_settings,
        backends=dataclasses.replace(
            real_settings.backends, database_url="postgresql://nobody@127.0.0.1:1/none"
        ),
    )
    with pytest.raises(StartupError, match="PostgreSQL unreachable"):
        await serve(broken, asyncio.Event())


async def test_unknown_flags_store_nothing_in_postgresql(
    real_settings: BatchSettings, database_url: str
) -> None:
    stop, task, server = await _serving(
        lambda stop, ready: serve(real_settings, stop, on_ready=ready)
    )
    try:
        async with BatchClient(f"127.0.0.1:{server.port}") as client:
            with pytest.raises(RpcError) as caught:
                await client.create_batch(["One."], flags={"promt": True}, request_id="r1")
            assert caught.value.reason == "UNKNOWN_FLAG"
            bad = caught.value.detail(details.BadRequest)
            assert isinstance(bad, details.BadRequest)
            assert [v.field for v in bad.field_violations] == ["metadata.flags[promt]"]
            batch = await client.create_batch(["One."], request_id="r1")
            request = pb.UpdateBatchRequest(
                batch_id=batch.batch_id,
                metadata=pb.BatchMetadata(name="renamed", flags={"promt": True}),
                update_mask=field_mask_pb2.FieldMask(paths=["name", "flags"]),
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.stub.UpdateBatch(request, timeout=10)
            assert RpcError.from_aio(refused.value).reason == "UNKNOWN_FLAG"
            request.metadata.flags.clear()
            request.metadata.flags["prompt_attached"] = True
            updated = (await client.stub.UpdateBatch(request, timeout=10)).batch
            assert (updated.metadata.name, dict(updated.metadata.flags)) == (
                "renamed",
                {"prompt_attached": True},
            )
        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM batches") == 1
            assert await conn.fetchval("SELECT count(*) FROM content_blobs") == 1
            assert await conn.fetchval("SELECT name FROM batches") == "renamed"
        finally:
            await conn.close()
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
