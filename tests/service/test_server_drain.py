"""Shutdown drains: NOT_SERVING while still serving, then new calls UNAVAILABLE, in-flight calls
finish, and a call that cannot finish in time ends UNAVAILABLE, never CANCELLED."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from conductor_server.api.scopes import SCOPES
from generated.huleedu.conductor.v1 import conductor_pb2 as pb
from generated.huleedu.conductor.v1 import conductor_pb2_grpc
from mesh.grpc.health import HealthReporter
from mesh.grpc.server import GrpcServer
from mesh.grpc.status import StatusTable
from mesh.settings import ServerSettings
from tests.support.polling import eventually

SERVICE = "huleedu.conductor.v1.PipelineConductorService"


class Slow(conductor_pb2_grpc.PipelineConductorServiceServicer):
    """Answers GetBatchPipelineState after as many seconds as its batch id says."""

    async def GetBatchPipelineState(
        self, request: pb.GetBatchPipelineStateRequest, context: Any
    ) -> pb.GetBatchPipelineStateResponse:
        await asyncio.sleep(float(request.batch_id))
        return pb.GetBatchPipelineStateResponse(batch_id=request.batch_id)


@pytest.fixture
def drained() -> list[str]:
    return []


@pytest.fixture
async def server(drained: list[str]) -> AsyncIterator[GrpcServer]:
    settings = ServerSettings(
        host="127.0.0.1",
        grpc_port=0,
        metrics_port=-1,
        uvloop=False,
        drain_seconds=0.5,
        shutdown_grace_seconds=0.5,
    )
    running = GrpcServer(
        settings,
        [lambda s: conductor_pb2_grpc.add_PipelineConductorServiceServicer_to_server(Slow(), s)],  # type: ignore[abstract]  # serves one method
        [SERVICE],
        StatusTable("test", []),
        CollectorRegistry(),
        HealthReporter([SERVICE]),
        SCOPES,
        on_drain=[lambda: drained.append("streams ended")],
    )
    async with running:
        yield running


async def test_a_drain_serves_then_refuses_and_ends_what_remains_unavailable(
    server: GrpcServer, drained: list[str]
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = conductor_pb2_grpc.PipelineConductorServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        async def state(seconds: float) -> grpc.StatusCode:
            try:
                await stub.GetBatchPipelineState(
                    pb.GetBatchPipelineStateRequest(batch_id=str(seconds)), timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        async def serving() -> int:
            check = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)  # type: ignore[attr-defined]
            return int(check.status)

        finishes = asyncio.create_task(state(0.7))  # in flight; done before the grace ends
        too_long = asyncio.create_task(state(30))  # cannot finish
        await asyncio.sleep(0.1)  # both are in flight
        closing = asyncio.create_task(server.close())
        await eventually(
            lambda: serving_is(serving, health_pb2.HealthCheckResponse.NOT_SERVING),
            what="NOT_SERVING",
        )
        assert await state(0) is grpc.StatusCode.OK  # the drain window still serves
        assert drained == []
        await eventually(
            lambda: refused(state), within=5, what="new calls refused after the drain window"
        )
        await closing
        assert drained == ["streams ended"]
        assert await finishes is grpc.StatusCode.OK
        assert await too_long is grpc.StatusCode.UNAVAILABLE


async def serving_is(serving: Any, status: int) -> bool:
    return bool(await serving() == status)


async def refused(state: Any) -> bool:
    return bool(await state(0) is grpc.StatusCode.UNAVAILABLE)


async def test_callers_watching_health_never_see_cancelled_across_a_drain(
    server: GrpcServer,
) -> None:
    # Sixteen callers without retries, each calling again at once after any answer: the load a
    # SIGTERM meets. Their channels watch health as the SDK's do, so the drain window (NOT_SERVING)
    # stops them before the server stops: no call is left queued for grpc's shutdown to cancel.
    target = f"127.0.0.1:{server.port}"
    codes: Counter[str] = Counter()
    done = asyncio.Event()
    config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": "accepting"},
    }
    options = [("grpc.service_config", json.dumps(config)), ("grpc.enable_retries", 0)]

    async def caller() -> None:
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            stub = conductor_pb2_grpc.PipelineConductorServiceStub(channel)
            request = pb.GetBatchPipelineStateRequest(batch_id="0.001")
            while not done.is_set():
                try:
                    await stub.GetBatchPipelineState(request, timeout=5)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1
                    await asyncio.sleep(0.001)

    callers = [asyncio.create_task(caller()) for _ in range(16)]
    await eventually(lambda: codes["OK"] >= 200, what="the callers under way")
    await server.close()
    await asyncio.sleep(0.2)  # calls made after the stop
    done.set()
    await asyncio.gather(*callers)
    assert codes["CANCELLED"] == 0, codes
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
    assert codes["UNAVAILABLE"] > 0, codes
