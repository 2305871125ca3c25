"""Keys on real processes: a key added to the file works without a restart, a removed one stops
working; every refusal is one audit line naming principal and method; no secret is ever logged."""

from __future__ import annotations

import contextlib
import re

import grpc
import pytest

from clients import BatchClient, ConductorClient, Credentials, RpcError
from mesh.security.keys import key_digest, new_key
from tests.security.conftest import Mesh, write_keys
from tests.support.polling import eventually


def batch_client(mesh: Mesh, key: str) -> BatchClient:
    return BatchClient(
        mesh.batch.address, credentials=Credentials(api_key=key, ca_file=str(mesh.pki.ca.cert))
    )


async def test_a_key_added_to_the_file_works_and_a_removed_one_stops_without_restart(
    mesh: Mesh,
) -> None:
    key = new_key()
    extra = {"principal": "newcomer", "sha256": key_digest(key), "scopes": ["batches:read"]}
    async with batch_client(mesh, key) as newcomer:
        try:
            write_keys(mesh.keys_file, mesh.keys, [extra])

            async def accepted() -> bool:
                await newcomer.list_batches()
                return True

            await eventually(accepted, 10, (RpcError,), what="the new key to be loaded")
        finally:
            write_keys(mesh.keys_file, mesh.keys)

        async def refused() -> bool:
            try:
                await newcomer.list_batches()
            except RpcError as exc:
                return exc.code == grpc.StatusCode.UNAUTHENTICATED
            return False

        await eventually(refused, 10, what="the removed key to be refused")


async def test_each_refusal_is_one_audit_line_with_principal_and_method(mesh: Mesh) -> None:
    marker = new_key()  # an unknown key: its hash prefix identifies this test's line
    async with batch_client(mesh, mesh.keys["worker"]) as worker:
        with pytest.raises(RpcError) as denied:
            await worker.create_batch(["An essay."])
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
    async with batch_client(mesh, marker) as stranger:
        with pytest.raises(RpcError) as unknown:
            await stranger.list_batches()
    assert unknown.value.code == grpc.StatusCode.UNAUTHENTICATED

    def audited() -> bool:
        logs = mesh.batch.logs()
        denied = re.findall(
            r"mesh\.audit .*refused CreateBatch PERMISSION_DENIED: missing scope "
            r"batches:write \(principal worker, peer ipv[46]:",
            logs,
        )
        unknown = f"unknown API key (sha256 {key_digest(marker)[:12]}...)"
        return bool(denied) and logs.count(unknown) == 1

    await eventually(audited, 10, what="the audit lines")


async def test_no_key_ever_appears_in_a_log(mesh: Mesh) -> None:
    ca_file = str(mesh.pki.ca.cert)
    caller = mesh.certificates["caller"]
    for key in mesh.keys.values():  # every key, accepted or refused somewhere
        async with batch_client(mesh, key) as client:
            with contextlib.suppress(RpcError):
                await client.list_batches()
        credentials = Credentials(
            api_key=key, ca_file=ca_file, cert_file=str(caller.cert), key_file=str(caller.key)
        )
        async with ConductorClient(mesh.conductor.address, credentials=credentials) as conductor:
            with contextlib.suppress(RpcError):
                await conductor.list_pipelines()
    logs = mesh.batch.log_path.read_text() + mesh.conductor.log_path.read_text()
    assert "refused" in logs  # the refusals were logged...
    for key in mesh.keys.values():
        assert key not in logs  # ...without a key
        assert key.removeprefix("hk_")[:16] not in logs
