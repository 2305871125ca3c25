"""The state store contract against the real stores, on real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conductor_server.ports import StateStore
from tests.support.state_contract import RunControlContract, StateContract
from tests.support.stores import composed_store, postgres_store


class TestPostgresStateStore(StateContract, RunControlContract):
    @pytest.fixture
    async def store(self, database_url: str) -> AsyncIterator[StateStore]:
        async with postgres_store(database_url) as store:
            yield store


class TestComposedStateStore(StateContract, RunControlContract):
    @pytest.fixture
    async def store(self, database_url: str, redis_url: str) -> AsyncIterator[StateStore]:
        async with composed_store(database_url, redis_url) as store:
            yield store
