"""The shared gRPC bootstrap: health, reflection, error details, correlation ids, metrics."""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from clients.errors import RpcError
from mesh.errors import FieldViolation, InvalidArgument
from mesh.grpc.health import HealthReporter
from mesh.grpc.server import GrpcServer
from mesh.grpc.status import StatusTable
from mesh.runtime import StartupError
from mesh.security.scopes import Scope
from mesh.settings import ServerSettings
from tests.support.polling import eventually

SERVICE = "test.v1.EchoService"
SCOPES = {f"/{SERVICE}/Echo": Scope.BATCHES_READ}


def _identity(data: bytes) -> bytes:
    return data


async def _echo(request: bytes, context: Any) -> bytes:
    if request == b"bad":
        raise InvalidArgument([FieldViolation("text", "must not be 'bad'")])
    if request == b"boom":
        raise RuntimeError("a bug")
    return request


def _register(server: grpc.aio.Server) -> None:
    """Registers the way generated ``add_*Servicer_to_server`` functions do."""
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(
            _echo, request_deserializer=_identity, response_serializer=_identity
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


class Backend:
    def __init__(self) -> None:
        self.up = True

    async def probe(self) -> None:
        if not self.up:
            raise ConnectionError("down")


@pytest.fixture
def backend() -> Backend:
    return Backend()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def server(backend: Backend, registry: CollectorRegistry) -> AsyncIterator[GrpcServer]:
    settings = ServerSettings(host="127.0.0.1", grpc_port=0, metrics_port=0)
    health = HealthReporter([SERVICE], {"store": backend.probe}, interval=0.05)
    async with GrpcServer(
        settings, [_register], [SERVICE], StatusTable("test", []), registry, health, SCOPES
    ) as running:
        yield running


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


async def _call(channel: grpc.aio.Channel, payload: bytes, metadata: Any = ()) -> Any:
    echo = channel.unary_unary(
        f"/{SERVICE}/Echo", request_serializer=_identity, response_deserializer=_identity
    )
    try:
        call = echo(payload, metadata=metadata, timeout=5)
        return await call, await call.trailing_metadata()
    except grpc.aio.AioRpcError as exc:
        raise RpcError.from_aio(exc) from exc


async def _health(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)  # type: ignore[attr-defined]
    return int(response.status)


def _http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_health_is_serving_overall_and_per_service(channel: grpc.aio.Channel) -> None:
    assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
    assert await _health(channel, SERVICE) == health_pb2.HealthCheckResponse.SERVING


async def test_health_follows_the_backend_down_and_back_up(
    server: GrpcServer, channel: grpc.aio.Channel, backend: Backend
) -> None:
    backend.up = False

    async def not_serving() -> bool:
        return await _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING

    await eventually(not_serving, 5.0)
    status, body = await asyncio.to_thread(_http_get, server.metrics_port, "/healthz")
    assert status == 503
    assert '"store": false' in body
    assert await _health_gauges(server) == {"mesh_serving": 0, "mesh_backend_up[store]": 0}
    backend.up = True

    async def serving() -> bool:
        return await _health(channel, SERVICE) == health_pb2.HealthCheckResponse.SERVING

    await eventually(serving, 5.0)
    assert await _health_gauges(server) == {"mesh_serving": 1, "mesh_backend_up[store]": 1}


async def _health_gauges(server: GrpcServer) -> dict[str, float]:
    """The health gauges as scraped from ``/metrics``: name (with the backend label) -> value."""
    status, body = await asyncio.to_thread(_http_get, server.metrics_port, "/metrics")
    assert status == 200
    return {
        f"{s.name}[{s.labels['backend']}]" if "backend" in s.labels else s.name: s.value
        for family in text_string_to_metric_families(body)
        if family.name in ("mesh_serving", "mesh_backend_up")
        for s in family.samples
    }


async def test_draining_reports_not_serving(server: GrpcServer, channel: grpc.aio.Channel) -> None:
    await server.health.drain()
    assert await _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_the_service_and_health(channel: grpc.aio.Channel) -> None:
    stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = [r async for r in stub.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


async def test_bad_input_is_invalid_argument_with_bad_request_detail(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(RpcError) as caught:
        await _call(channel, b"bad")
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == "INVALID_ARGUMENT"
    bad_request = caught.value.detail(error_details_pb2.BadRequest)
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert bad_request.field_violations[0].field == "text"


async def test_an_unmapped_error_is_internal_and_logged_once(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR), pytest.raises(RpcError) as caught:
        await _call(channel, b"boom")
    assert caught.value.code is grpc.StatusCode.INTERNAL
    assert "a bug" not in caught.value.message  # internals are not leaked to callers
    logged = [r for r in caplog.records if r.exc_info and "a bug" in str(r.exc_info[1])]
    assert len(logged) == 1


async def test_correlation_id_is_echoed_or_generated(channel: grpc.aio.Channel) -> None:
    _, trailing = await _call(channel, b"hi", metadata=(("x-correlation-id", "abc-123"),))
    assert dict(trailing)["x-correlation-id"] == "abc-123"
    _, trailing = await _call(channel, b"hi")
    assert len(dict(trailing)["x-correlation-id"]) == 36
    _, trailing = await _call(channel, b"hi", metadata=(("x-correlation-id", "x" * 129),))
    assert len(dict(trailing)["x-correlation-id"]) == 36  # too long for logs and events: replaced


async def test_metrics_count_rpcs_by_code(server: GrpcServer, channel: grpc.aio.Channel) -> None:
    await _call(channel, b"ok")
    with pytest.raises(RpcError):
        await _call(channel, b"bad")
    status, text = await asyncio.to_thread(_http_get, server.metrics_port, "/metrics")
    assert status == 200
    handled = {
        sample.labels["grpc_code"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "grpc_server_handled_total" and sample.labels["grpc_method"] == "Echo"
    }
    assert handled == {"OK": 1.0, "INVALID_ARGUMENT": 1.0}
    assert "grpc_server_handling_seconds_bucket" in text


@pytest.mark.parametrize("taken", ["grpc", "metrics"])
async def test_a_port_in_use_is_a_clear_startup_error(taken: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        settings = ServerSettings(
            host="127.0.0.1",
            grpc_port=port if taken == "grpc" else 0,
            metrics_port=port if taken == "metrics" else 0,
        )
        server = GrpcServer(
            settings,
            [_register],
            [SERVICE],
            StatusTable("test", []),
            CollectorRegistry(),
            HealthReporter([SERVICE]),
            SCOPES,
        )
        what = "gRPC" if taken == "grpc" else "metrics"
        with pytest.raises(StartupError, match=f"cannot listen for {what} on 127.0.0.1:{port}"):
            await server.__aenter__()
    await server.close()  # nothing left to stop: a failed start cleaned up after itself
