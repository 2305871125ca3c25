"""Keys from PostgreSQL (``AUTH_KEYS_FROM_DATABASE``): the ``api_keys`` table, re-read while the
server runs; ``huleedu keys new --database`` adds a row a real-mode conductor accepts."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest

from clients import ConductorClient, Credentials, RpcError
from conductor_server.app import serve
from conductor_server.settings import ConductorOptions, ConductorSettings
from conductor_server.store.postgres import MIGRATIONS
from mesh.grpc.server import GrpcServer
from mesh.postgres.pool import postgres_pool
from mesh.security.keys import KeySourceError, key_digest, new_key
from mesh.security.keytable import INSERT_KEY, KeyTable
from mesh.settings import BackendSettings, SecuritySettings, ServerSettings
from tests.e2e.conftest import ROOT
from tests.support.polling import eventually


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Any]:
    async with postgres_pool(database_url, 2, MIGRATIONS) as opened:
        yield opened


async def test_rows_become_keys_and_a_bad_row_keeps_the_previous_keys(pool: Any) -> None:
    first, second = new_key(), new_key()
    await pool.execute(INSERT_KEY, "ops", key_digest(first), ["batches:read"], None)
    async with KeyTable(pool, interval=3600) as table:
        found = table.index.for_key(first)[0]
        assert found is not None
        assert found.scopes == {"batches:read"}
        await pool.execute(INSERT_KEY, "ops", key_digest(second), ["batches:read"], None)
        await table.refresh()
        assert table.index.for_key(second)[0] is not None
        await pool.execute(INSERT_KEY, "bad", key_digest(new_key()), ["root"], None)
        with pytest.raises(KeySourceError, match="unknown scopes"):
            await table.refresh()
        assert table.index.for_key(second)[0] is not None


async def test_a_key_added_with_the_cli_is_accepted_by_a_running_conductor(
    database_url: str, redis_url: str, kafka_bootstrap: str, kafka_namespace: str
) -> None:
    settings = ConductorSettings(
        server=ServerSettings(host="127.0.0.1", grpc_port=0, metrics_port=-1, uvloop=False),
        backends=BackendSettings(
            redis_url=redis_url,
            database_url=database_url,
            kafka_bootstrap=kafka_bootstrap,
            kafka_namespace=kafka_namespace,
            kafka_partitions=1,
        ),
        security=SecuritySettings(auth_keys_from_database=True, auth_reload_seconds=0.2),
        options=ConductorOptions(consumer_group=f"{kafka_namespace}-conductor"),
    )
    stop = asyncio.Event()
    ready: asyncio.Future[GrpcServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop, on_ready=ready.set_result))
    try:
        server = await asyncio.wait_for(ready, 90)
        made = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clients",
            "keys",
            "new",
            "--principal",
            "ops",
            "--scope",
            "pipelines:read",
            "--database",
            database_url,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(made.communicate(), 60)
        assert made.returncode == 0, err
        key = err.decode().rsplit(" ", 1)[1].strip()
        credentials = Credentials(api_key=key)
        async with ConductorClient(f"127.0.0.1:{server.port}", credentials=credentials) as ops:

            async def accepted() -> bool:
                await ops.list_pipelines()
                return True

            await eventually(accepted, 10, (RpcError,), what="the new row to be loaded")
            with pytest.raises(RpcError) as raised:
                await ops.register_batch("b1", ["e1"])
            assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED
        conn = await asyncpg.connect(database_url)
        try:
            stored = await conn.fetchval("SELECT sha256 FROM api_keys WHERE principal = 'ops'")
        finally:
            await conn.close()
        assert stored == key_digest(key)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
