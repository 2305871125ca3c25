"""Every RPC of both services, table-driven: no key, unknown key, expired key, each wrong scope,
the right scope; and the two examples of the issue (a worker creating a batch, a batch writer
recording an outcome)."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from batch_server.api.scopes import SCOPES as BATCH_SCOPES
from conductor_server.api.scopes import SCOPES as CONDUCTOR_SCOPES
from tests.security.conftest import ALL, Mesh
from tests.support.rpcs import RPCS, Rpc, call

REFUSALS = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def scope_of(rpc: Rpc) -> str:
    table = CONDUCTOR_SCOPES if rpc.server == "conductor" else BATCH_SCOPES
    return table[rpc.full_name]


async def _outcome(
    mesh: Mesh, rpc: Rpc, metadata: tuple[tuple[str, str], ...]
) -> grpc.aio.AioRpcError | None:
    ids = {"batch_id": f"absent-{uuid.uuid4().hex}"}  # each call its own: nothing is shared
    async with mesh.channel(rpc.server) as channel:
        try:
            await call(channel, rpc, rpc.sample(ids), metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in {error}")


CREDENTIALS = {
    "no key": (),
    "unknown key": (("authorization", "Bearer hk_not_a_key_of_this_server"),),
    "not a bearer": (("authorization", "Basic YWRtaW46YWRtaW4="),),
}


@pytest.mark.parametrize("rpc", RPCS, ids=str)
@pytest.mark.parametrize("case", [*CREDENTIALS, "expired key"])
async def test_without_valid_credentials_every_rpc_is_unauthenticated(
    mesh: Mesh, rpc: Rpc, case: str
) -> None:
    metadata = mesh.bearer("expired") if case == "expired key" else CREDENTIALS[case]
    error = await _outcome(mesh, rpc, metadata)
    assert error is not None
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
    assert error_info(error).reason == "UNAUTHENTICATED"


WRONG = [(rpc, scope) for rpc in RPCS for scope in ALL if scope != scope_of(rpc)]


@pytest.mark.parametrize(("rpc", "held"), WRONG, ids=[f"{r}-with-{s}" for r, s in WRONG])
async def test_each_wrong_scope_is_permission_denied_naming_the_needed_one(
    mesh: Mesh, rpc: Rpc, held: str
) -> None:
    error = await _outcome(mesh, rpc, mesh.bearer(f"only-{held}"))
    assert error is not None
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    info = error_info(error)
    assert info.reason == "MISSING_SCOPE"
    assert info.metadata["scope"] == scope_of(rpc)
    assert info.domain == ("conductor.huleedu" if rpc.server == "conductor" else "batch.huleedu")


@pytest.mark.parametrize("rpc", RPCS, ids=str)
async def test_the_right_scope_passes_the_boundary(mesh: Mesh, rpc: Rpc) -> None:
    error = await _outcome(mesh, rpc, mesh.bearer(f"only-{scope_of(rpc)}"))
    assert error is None or error.code() not in REFUSALS, error  # e.g. NOT_FOUND: no such batch


@pytest.mark.parametrize(
    ("principal", "rpc_name"),
    [("worker", "CreateBatch"), ("writer", "RecordStepOutcome"), ("writer", "RegisterBatch")],
)
async def test_a_worker_cannot_create_and_a_writer_cannot_record_or_register(
    mesh: Mesh, principal: str, rpc_name: str
) -> None:
    [rpc] = [r for r in RPCS if r.name == rpc_name]
    error = await _outcome(mesh, rpc, mesh.bearer(principal))
    assert error is not None
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert principal in (error.details() or "")
