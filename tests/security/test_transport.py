"""TLS and mutual TLS on real processes: untrusted CAs, plaintext, certificate principals."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc

from clients import BatchClient, Credentials
from generated.huleedu.conductor.v1 import conductor_pb2 as cpb
from tests.security.conftest import Mesh
from tests.support.rpcs import RPCS, Rpc, call

LIST_PIPELINES = next(r for r in RPCS if r.name == "ListPipelines")
LIST_BATCHES = next(r for r in RPCS if r.name == "ListBatches")


def _rpc(name: str) -> Rpc:
    return next(r for r in RPCS if r.name == name)


async def _code(
    channel: grpc.aio.Channel, rpc: Rpc, metadata: tuple[tuple[str, str], ...] = ()
) -> grpc.StatusCode:
    try:
        absent = {"batch_id": f"absent-{uuid.uuid4().hex}"}
        await call(channel, rpc, rpc.sample(absent), metadata=metadata, deadline=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("server", ["conductor", "batch"])
async def test_a_client_trusting_another_ca_does_not_connect(mesh: Mesh, server: str) -> None:
    untrusted_roots = grpc.ssl_channel_credentials(mesh.pki.untrusted.cert.read_bytes())
    rpc = LIST_PIPELINES if server == "conductor" else LIST_BATCHES
    async with grpc.aio.secure_channel(mesh.server(server).address, untrusted_roots) as channel:
        assert await _code(channel, rpc, mesh.bearer("admin")) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("server", ["conductor", "batch"])
async def test_plaintext_to_a_tls_server_does_not_connect(mesh: Mesh, server: str) -> None:
    rpc = LIST_PIPELINES if server == "conductor" else LIST_BATCHES
    async with grpc.aio.insecure_channel(mesh.server(server).address) as channel:
        assert await _code(channel, rpc, mesh.bearer("admin")) == grpc.StatusCode.UNAVAILABLE


async def test_the_conductor_refuses_clients_without_a_certificate_of_its_ca(mesh: Mesh) -> None:
    ca = mesh.pki.ca.cert.read_bytes()
    stranger = mesh.pki.untrusted.issue("stranger", dns=("batch-service.huleedu.test",))
    for credentials in (
        grpc.ssl_channel_credentials(ca),  # no client certificate
        grpc.ssl_channel_credentials(ca, stranger.key.read_bytes(), stranger.cert.read_bytes()),
    ):
        async with grpc.aio.secure_channel(mesh.conductor.address, credentials) as channel:
            code = await _code(channel, LIST_PIPELINES, mesh.bearer("admin"))
            assert code == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_names_its_principal_with_its_scopes(mesh: Mesh) -> None:
    async with mesh.channel("conductor", certificate="worker-cert") as channel:
        # passes the boundary (outcomes:record) and is then judged: no such batch
        assert await _code(channel, _rpc("RecordStepOutcome")) == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(
                channel, _rpc("RegisterBatch"), _rpc("RegisterBatch").sample({"batch_id": "b"})
            )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "worker-cert" in (raised.value.details() or "")


async def test_a_bad_key_is_refused_even_with_a_good_certificate(mesh: Mesh) -> None:
    async with mesh.channel("conductor", certificate="batch-service") as channel:
        code = await _code(channel, _rpc("RegisterBatch"), (("authorization", "Bearer hk_x"),))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_the_batch_service_registers_batches_as_its_own_certificate_principal(
    mesh: Mesh,
) -> None:
    credentials = Credentials(api_key=mesh.keys["writer"], ca_file=str(mesh.pki.ca.cert))
    async with BatchClient(mesh.batch.address, credentials=credentials) as writer:
        batch = await writer.create_batch(["One.", "Two."], flags={"prompt_attached": True})
    async with mesh.channel("conductor") as channel:
        state = await call(
            channel,
            _rpc("GetBatchPipelineState"),
            cpb.GetBatchPipelineStateRequest(batch_id=batch.batch_id),
            metadata=mesh.bearer("admin"),
        )
    assert state.essay_count == 2
    assert "principal batch-service" not in mesh.conductor.logs()  # never refused


@pytest.mark.parametrize("server", ["conductor", "batch"])
async def test_health_answers_without_an_api_key(mesh: Mesh, server: str) -> None:
    async with mesh.channel(server) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)  # type: ignore[attr-defined]
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_is_off_in_real_mode_by_default(mesh: Mesh) -> None:
    async with mesh.channel("batch") as channel:
        stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]
        # Nothing is written: the server answers the call itself, and a request sent after that
        # answer would fail on the client's side (INTERNAL) instead.
        call = stub.ServerReflectionInfo(timeout=5)
        assert await call.code() == grpc.StatusCode.UNIMPLEMENTED
