"""The in-memory batch store passes the batch store contract."""

from __future__ import annotations

import pytest

from batch_server.store.memory import MemoryBatchStore
from mesh.events.memory import MemoryBus
from tests.support.batch_store_contract import BatchStoreContract, RunControlStoreContract


class TestMemoryBatchStore(BatchStoreContract, RunControlStoreContract):
    @pytest.fixture
    def store(self) -> MemoryBatchStore:
        return MemoryBatchStore(MemoryBus())
