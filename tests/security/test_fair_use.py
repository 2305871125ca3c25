"""Fair use on real processes: a principal's rate (RetryInfo says when to come back), its open
streams, and health checks that answer while a principal holds every stream it may."""

from __future__ import annotations

import asyncio

import grpc
import httpx
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients import BatchClient, Credentials, RpcError
from tests.security.conftest import Mesh
from tests.support.polling import eventually


def client(mesh: Mesh, principal: str) -> BatchClient:
    credentials = Credentials(api_key=mesh.keys[principal], ca_file=str(mesh.pki.ca.cert))
    return BatchClient(mesh.batch.address, credentials=credentials)


async def test_past_its_rate_a_principal_is_told_when_to_retry(mesh: Mesh) -> None:
    async with client(mesh, "limited") as limited:  # batches:read at 1/s, burst 1
        await limited.list_batches()
        try:
            await limited.list_batches()
        except RpcError as exc:
            error = exc
        else:
            raise AssertionError("the second call within a second was not refused")
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.reason == "RATE_LIMITED"
        retry = error.detail(error_details_pb2.RetryInfo)
        assert isinstance(retry, error_details_pb2.RetryInfo)
        wait = retry.retry_delay.ToTimedelta().total_seconds()
        assert 0 < wait <= 1.0
        await asyncio.sleep(wait)  # what RetryInfo said
        await limited.list_batches()
    async with client(mesh, "admin") as other:  # another principal is not held back
        await other.list_batches()


async def test_past_its_stream_limit_a_principal_is_refused_until_one_ends(mesh: Mesh) -> None:
    async with client(mesh, "streamer") as streamer:  # max_streams 2
        batch = await streamer.create_batch(["An essay."])
        await streamer.start_pipeline(batch.batch_id, "spellcheck")  # no worker: stays running
        held = [streamer.watch_batch(batch.batch_id) for _ in range(2)]
        for stream in held:
            await anext(stream)
        try:
            await anext(streamer.watch_batch(batch.batch_id, resume_for=0))
        except RpcError as exc:
            error = exc
        else:
            raise AssertionError("a third stream was opened")
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.reason == "TOO_MANY_STREAMS"
        assert error.detail(error_details_pb2.RetryInfo) is not None
        async with client(mesh, "admin") as other:  # others may still watch
            await anext(other.watch_batch(batch.batch_id))
        await held[0].aclose()  # type: ignore[attr-defined]

        async def room_again() -> bool:  # once the server has seen the cancellation
            stream = streamer.watch_batch(batch.batch_id, resume_for=0)
            try:
                await anext(stream)
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
            return True

        await eventually(room_again, 10, (RpcError,), what="the ended stream to be released")
        await held[1].aclose()  # type: ignore[attr-defined]


async def test_health_and_metrics_answer_while_a_principal_holds_many_streams(mesh: Mesh) -> None:
    async with client(mesh, "admin") as admin:
        batch = await admin.create_batch(["An essay."])
        await admin.start_pipeline(batch.batch_id, "spellcheck")
        streams = [admin.watch_batch(batch.batch_id) for _ in range(100)]
        await asyncio.gather(*(anext(s) for s in streams))
        async with mesh.channel("batch") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(20):
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)  # type: ignore[attr-defined]
                assert response.status == health_pb2.HealthCheckResponse.SERVING
        side_port = f"http://127.0.0.1:{mesh.batch.metrics_port}"
        async with httpx.AsyncClient(timeout=2) as http:
            assert (await http.get(f"{side_port}/healthz")).status_code == 200
            metrics = await http.get(f"{side_port}/metrics")
            assert 'grpc_method="WatchBatch"' in metrics.text
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]
