"""The real state stores over the test's fresh database and flushed Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from conductor_server.domain.counting import StepTable
from conductor_server.domain.model import StepDefinition
from conductor_server.store.composed import ComposedStateStore
from conductor_server.store.postgres import MIGRATIONS, PostgresStateStore
from conductor_server.store.redis_mirror import RedisMirror, redis_client
from mesh.postgres.pool import postgres_pool
from tests.support.state_contract import STEPS


@asynccontextmanager
async def pool_of(
    database_url: str, size: int = 10, migrations: dict[str, str] = MIGRATIONS
) -> AsyncIterator[Any]:
    """A pool on the test's database, ``migrations`` (by default the conductor's) applied."""
    async with postgres_pool(database_url, size, migrations) as pool:
        yield pool


@asynccontextmanager
async def postgres_store(
    database_url: str, steps: Mapping[str, StepDefinition] = STEPS
) -> AsyncIterator[PostgresStateStore]:
    async with pool_of(database_url) as pool:
        yield PostgresStateStore(pool, steps)


@asynccontextmanager
async def composed_store(
    database_url: str, redis_url: str, steps: Mapping[str, StepDefinition] = STEPS
) -> AsyncIterator[ComposedStateStore]:
    async with (
        pool_of(database_url) as pool,
        redis_client(redis_url) as redis,
        RedisMirror(redis, StepTable(steps)) as mirror,
        ComposedStateStore(PostgresStateStore(pool, steps), mirror) as store,
    ):
        yield store
