"""The PostgreSQL batch store passes the essay store contract, on a fresh database per test; a
TriggerSpellcheck essay and its event commit together or not at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from batch_server import events
from batch_server.domain.essays import SpellcheckEssay
from batch_server.store.postgres import MIGRATIONS, PostgresBatchStore
from mesh.postgres.pool import postgres_pool
from tests.support.essay_store_contract import T0, EssayStoreContract


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Any]:
    async with postgres_pool(database_url, 4, MIGRATIONS) as opened:
        yield opened


class TestPostgresEssayStore(EssayStoreContract):
    @pytest.fixture
    def store(self, pool: Any) -> PostgresBatchStore:
        return PostgresBatchStore(pool)


async def test_a_spellcheck_essay_and_its_request_commit_together(pool: Any) -> None:
    store = PostgresBatchStore(pool)
    essay = SpellcheckEssay("lone", "s-lone", "en", T0)
    first = events.spellcheck_requested("lone", "s-lone", "en", "cid", T0)
    await store.add_spellcheck_essay(essay, [first])
    again = events.spellcheck_requested("lone", "s-other", "en", "cid-2", T0)
    with pytest.raises(asyncpg.UniqueViolationError):
        await store.add_spellcheck_essay(essay, [again])  # the essay exists: nothing is written
    outbox = await pool.fetch("SELECT event_id FROM event_outbox")
    assert [r["event_id"] for r in outbox] == [first.envelope.event_id]
