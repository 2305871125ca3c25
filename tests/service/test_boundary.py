"""The trust boundary on embedded servers with API keys: the whole chain through the wrapper.

(``tests/security`` holds the full table over every RPC, on real processes and backends.)
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2 as details
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients import BatchClient, Credentials, RpcError
from conductor_server.settings import ConductorSettings
from mesh.events.memory import MemoryBus
from mesh.events.topics import EventKind
from mesh.security.keys import key_digest, new_key
from mesh.settings import SecuritySettings
from tests.service.conftest import SERVER, RunningConductor, conductor_service
from tests.support.batch import batch_service, events_of, settings_for

PRINCIPALS: dict[str, dict[str, Any]] = {
    "batch-service": {"scopes": ["batches:register", "pipelines:read"]},
    "writer": {"scopes": ["batches:write", "batches:read"]},
    "reader": {"scopes": ["batches:read", "pipelines:read"]},
    "limited": {
        "scopes": ["batches:read"],
        "rate_limits": {"batches:read": "0.5/2"},
        "max_streams": 1,
    },
}


@dataclass
class Mesh:
    conductor: RunningConductor
    batch_address: str
    keys: dict[str, str]  # principal -> its API key

    def client(self, principal: str | None) -> BatchClient:
        key = self.keys[principal] if principal else ""
        return BatchClient(self.batch_address, timeout=10, credentials=Credentials(api_key=key))


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    keys = {name: new_key() for name in PRINCIPALS}
    path = tmp_path / "keys.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"principal": name, "sha256": key_digest(keys[name]), **entry})
            for name, entry in PRINCIPALS.items()
        )
    )
    security = SecuritySettings(auth_keys_file=str(path))
    bus = MemoryBus()
    async with conductor_service(ConductorSettings(server=SERVER, security=security), bus) as c:
        settings = settings_for(c.address, conductor_api_key=keys["batch-service"])
        async with batch_service(dataclasses.replace(settings, security=security), bus) as b:
            yield Mesh(c, b.address, keys)


async def _refusal(client: BatchClient) -> RpcError:
    async with client:
        with pytest.raises(RpcError) as raised:
            await client.create_batch(["An essay."])
    return raised.value


async def test_a_writer_creates_a_batch_the_service_registering_it_with_its_own_key(
    mesh: Mesh,
) -> None:
    async with mesh.client("writer") as writer:
        batch = await writer.create_batch(["An essay."], flags={"prompt_attached": True})
    async with mesh.conductor.client as anonymous:
        with pytest.raises(RpcError) as raised:
            await anonymous.get_batch_pipeline_state(batch.batch_id)
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED


async def test_without_a_key_the_call_is_unauthenticated(mesh: Mesh) -> None:
    error = await _refusal(mesh.client(None))
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == "UNAUTHENTICATED"
    assert "authorization: Bearer" in error.message


async def test_without_the_scope_the_call_is_denied_naming_the_scope(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        error = await _refusal(mesh.client("reader"))
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    info = error.detail(details.ErrorInfo)
    assert isinstance(info, details.ErrorInfo)
    assert (info.reason, info.domain) == ("MISSING_SCOPE", "batch.huleedu")
    assert info.metadata["scope"] == "batches:write"
    [audit] = [r for r in caplog.records if r.name == "mesh.audit"]
    assert "CreateBatch" in audit.getMessage()
    assert "principal reader" in audit.getMessage()
    assert "missing scope batches:write" in audit.getMessage()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert all(key not in logged for key in mesh.keys.values())


async def test_past_the_rate_the_call_is_resource_exhausted_with_retry_info(mesh: Mesh) -> None:
    async with mesh.client("limited") as client:
        await client.list_batches()
        await client.list_batches()  # the burst of 2
        with pytest.raises(RpcError) as raised:
            await client.list_batches()
    error = raised.value
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "RATE_LIMITED"
    retry = error.detail(details.RetryInfo)
    assert isinstance(retry, details.RetryInfo)
    assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 2.0
    quota = error.detail(details.QuotaFailure)
    assert isinstance(quota, details.QuotaFailure)
    assert quota.violations[0].subject == "principal:limited"


async def test_past_the_stream_limit_a_watch_is_resource_exhausted(mesh: Mesh) -> None:
    async with mesh.client("writer") as writer:
        batch = await writer.create_batch(["An essay."])
        await writer.start_pipeline(batch.batch_id, "spellcheck")
    async with mesh.client("limited") as watcher:
        first = watcher.watch_batch(batch.batch_id)
        await anext(first)  # holds the principal's one stream
        with pytest.raises(RpcError) as raised:
            await anext(watcher.watch_batch(batch.batch_id, resume_for=0))
        await first.aclose()  # type: ignore[attr-defined]  # an async generator
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert raised.value.reason == "TOO_MANY_STREAMS"
    assert raised.value.detail(details.RetryInfo) is not None


async def test_health_answers_without_credentials(mesh: Mesh) -> None:
    async with grpc.aio.insecure_channel(mesh.batch_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)  # type: ignore[attr-defined]
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_batch_services_own_refusals_at_the_conductor_are_not_the_callers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its rate at the conductor spent: UNAVAILABLE (retriable). A wrong key of its own:
    INTERNAL for the caller and an ERROR line for the operator. Neither stores the batch."""
    service, writer = new_key(), new_key()
    lines = [
        {
            "principal": "batch-service",
            "sha256": key_digest(service),
            "scopes": ["batches:register", "pipelines:read"],
            "rate_limits": {"batches:register": "0.001/1"},
        },
        {"principal": "writer", "sha256": key_digest(writer), "scopes": ["batches:write"]},
    ]
    path = tmp_path / "keys.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    security = SecuritySettings(auth_keys_file=str(path))
    bus = MemoryBus()
    async with conductor_service(ConductorSettings(server=SERVER, security=security), bus) as c:
        for key, code in ((service, grpc.StatusCode.UNAVAILABLE), (new_key(), None)):
            settings = settings_for(c.address, conductor_api_key=key)
            settings = dataclasses.replace(settings, security=security)
            async with batch_service(settings, bus) as b:
                credentials = Credentials(api_key=writer)
                async with BatchClient(b.address, credentials=credentials) as client:
                    if code is not None:
                        await client.create_batch(["First."])  # spends the one token
                    with caplog.at_level(logging.ERROR), pytest.raises(RpcError) as raised:
                        await client.create_batch(["Second."])
            if code is not None:
                assert raised.value.code == code
            else:
                assert raised.value.code == grpc.StatusCode.INTERNAL
                assert raised.value.reason == "CONDUCTOR_FAILED"
                assert any(
                    "refused this service's credentials" in r.message for r in caplog.records
                )
        assert len(events_of(bus, EventKind.BATCH_CREATED)) == 1  # the first call's only
