"""The PostgreSQL batch store passes the batch store contract, on a fresh database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from batch_server.store.postgres import MIGRATIONS, PostgresBatchStore
from mesh.postgres.pool import postgres_pool
from tests.support.batch_store_contract import BatchStoreContract, RunControlStoreContract


class TestPostgresBatchStore(BatchStoreContract, RunControlStoreContract):
    @pytest.fixture
    async def store(self, database_url: str) -> AsyncIterator[PostgresBatchStore]:
        async with postgres_pool(database_url, 4, MIGRATIONS) as pool:
            yield PostgresBatchStore(pool)
