"""The state store contract against every implementation, the real ones on real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conductor_server.state import (
    ComposedStateStore,
    MemoryStateStore,
    PostgresStateStore,
    RedisStateStore,
    StateStore,
)
from tests.unit.test_state_contract import STEPS, StateContract


async def open_store(kind: str, redis_url: str, database_url: str) -> StateStore:
    """A fresh store of ``kind`` (migrations applied)."""
    if kind == "memory":
        return MemoryStateStore(STEPS)
    if kind == "redis":
        return RedisStateStore.from_url(redis_url, STEPS)
    durable = await PostgresStateStore.connect(database_url, STEPS)
    await durable.migrate()
    if kind == "postgres":
        return durable
    return ComposedStateStore(durable, RedisStateStore.from_url(redis_url, STEPS))


class TestStateContract(StateContract):
    @pytest.fixture(params=["memory", "redis", "postgres", "composed"])
    async def store(
        self, request: pytest.FixtureRequest, redis_url: str, database_url: str
    ) -> AsyncIterator[StateStore]:
        async with await open_store(request.param, redis_url, database_url) as store:
            yield store
