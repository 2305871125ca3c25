"""Bad input on real processes and backends: a NUL in any string of any RPC is
INVALID_ARGUMENT naming the field, and nothing is stored, registered or published.

The same table as ``tests/service/test_input.py`` (embedded mode). Both servers share one
database here, so "nothing written" is every table's row count, before and after.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc
import pytest

from tests.security.conftest import Mesh
from tests.service.test_input import IDS, NUL_CASES, bad_request, field_of, registrations
from tests.support.rpcs import RPCS, Rpc, call, with_text

KEPT = ("schema_migrations", "api_keys")


async def row_counts(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        return {
            t["table_name"]: await conn.fetchval(f'SELECT count(*) FROM "{t["table_name"]}"')
            for t in tables
            if t["table_name"] not in KEPT
        }
    finally:
        await conn.close()


@pytest.mark.parametrize(("rpc", "path"), NUL_CASES, ids=[f"{r}.{p}" for r, p in NUL_CASES])
async def test_a_nul_in_any_string_is_invalid_argument_and_writes_nothing(
    mesh: Mesh, rpc: Rpc, path: str
) -> None:
    before = await row_counts(mesh.database_url)
    registered = await registrations(mesh.conductor.metrics_port)
    request = with_text(rpc.sample(IDS), path, "a\x00b")
    async with mesh.channel(rpc.server) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, rpc, request, metadata=mesh.bearer("admin"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
    fields = [v.field for v in bad_request(raised.value).field_violations]
    assert any(f.startswith(field_of(path)) for f in fields), fields
    assert await registrations(mesh.conductor.metrics_port) == registered
    assert await row_counts(mesh.database_url) == before


@pytest.mark.parametrize("rpc", RPCS, ids=str)
async def test_bytes_that_are_not_the_request_are_invalid_argument(mesh: Mesh, rpc: Rpc) -> None:
    async with mesh.channel(rpc.server) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, rpc, b"\xff\xff\xff", metadata=mesh.bearer("admin"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_request_past_the_message_limit_is_resource_exhausted_and_writes_nothing(
    mesh: Mesh,
) -> None:
    [create] = [r for r in RPCS if r.name == "CreateBatch"]
    request: Any = create.sample(IDS)
    del request.essays[:]
    request.essays.add(text="x" * (1024 * 1024 - 1))  # each within its own limit...
    request.essays.extend([request.essays[0]] * 4)  # ...five of them past the 4 MiB message
    before = await row_counts(mesh.database_url)
    async with mesh.channel("batch") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, create, request, metadata=mesh.bearer("admin"))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await row_counts(mesh.database_url) == before
