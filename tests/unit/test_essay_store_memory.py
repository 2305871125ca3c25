"""The in-memory batch store passes the essay store contract, and publishes a TriggerSpellcheck
essay's event as it records the essay."""

from __future__ import annotations

import pytest

from batch_server import events
from batch_server.domain.essays import SpellcheckEssay
from batch_server.store.memory import MemoryBatchStore
from mesh.events.memory import MemoryBus
from mesh.events.topics import EventKind, topic_name
from tests.support.essay_store_contract import T0, EssayStoreContract


class TestMemoryEssayStore(EssayStoreContract):
    @pytest.fixture
    def store(self) -> MemoryBatchStore:
        return MemoryBatchStore(MemoryBus())


async def test_a_spellcheck_essay_is_recorded_with_its_request() -> None:
    bus = MemoryBus()
    store = MemoryBatchStore(bus)
    event = events.spellcheck_requested("lone", "s-lone", "en", "cid", T0)
    await store.add_spellcheck_essay(SpellcheckEssay("lone", "s-lone", "en", T0), [event])
    records = bus.records(topic_name(EventKind.ESSAY_SPELLCHECK_REQUESTED, bus.namespace))
    assert len(records) == 1
    assert await store.find_essay("lone") is not None
