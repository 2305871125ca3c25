"""The essay part of the batch store contract: every ``BatchStore`` must pass
``EssayStoreContract`` (essays of batches and of TriggerSpellcheck, found by id, listed by page).

``tests/unit/test_essay_store_memory.py`` runs it against the in-memory store,
``tests/integration/test_essay_store_contract.py`` against PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from batch_server.domain.errors import BatchNotFound
from batch_server.domain.essays import SpellcheckEssay, StoredEssay
from batch_server.domain.model import Batch, BatchMetadata, Essay
from batch_server.ports import BatchStore, NewBatch, ProgressWrite

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def batch(batch_id: str, essays: int) -> Batch:
    return Batch(
        batch_id,
        tuple(
            Essay(f"{batch_id}-e{i}", f"ref-{i}", f"{batch_id}-s{i}", f"{batch_id}-s{i}")
            for i in range(essays)
        ),
        BatchMetadata(),
        T0,
    )


async def add(store: BatchStore, *batches: Batch) -> None:
    for one in batches:
        await store.create_batch(NewBatch(one, f"request-{one.batch_id}", "fingerprint"), [])


class EssayStoreContract:
    """Behaviour every ``BatchStore`` shares; subclasses provide the ``store`` fixture."""

    async def test_a_batch_essay_is_found_with_its_batch_position_and_latest_text(
        self, store: BatchStore
    ) -> None:
        await add(store, batch("b1", 3), batch("b2", 2))
        assert await store.find_essay("b1-e2") == StoredEssay(
            "b1", 2, Essay("b1-e2", "ref-2", "b1-s2", "b1-s2")
        )
        async with store.progress() as unit:
            await unit.load(["b1"])
            await unit.save(ProgressWrite("b1", texts={"b1-e2": "corrected"}))
        found = await store.find_essay("b1-e2")
        assert found is not None
        assert found.essay == Essay("b1-e2", "ref-2", "b1-s2", "corrected")
        assert await store.find_essay("no-such-essay") is None

    async def test_an_essay_of_trigger_spellcheck_is_found_without_a_batch(
        self, store: BatchStore
    ) -> None:
        await store.add_spellcheck_essay(SpellcheckEssay("lone", "s-lone", "sv", T0), [])
        assert await store.find_essay("lone") == StoredEssay(
            "", 0, Essay("lone", "", "s-lone", "s-lone")
        )

    async def test_essays_are_listed_in_batch_order_a_page_at_a_time(
        self, store: BatchStore
    ) -> None:
        await add(store, batch("b1", 5), batch("b2", 3))
        first = await store.list_essays("b1", 2, -1)
        assert [(e.batch_id, e.position, e.essay.essay_id) for e in first] == [
            ("b1", 0, "b1-e0"),
            ("b1", 1, "b1-e1"),
        ]
        rest = await store.list_essays("b1", 10, first[-1].position)
        assert [e.essay.essay_id for e in rest] == ["b1-e2", "b1-e3", "b1-e4"]
        assert rest[0].essay == Essay("b1-e2", "ref-2", "b1-s2", "b1-s2")
        assert await store.list_essays("b1", 10, 4) == []  # past the last essay
        assert [e.essay.essay_id for e in await store.list_essays("b2", 1000, -1)] == [
            "b2-e0",
            "b2-e1",
            "b2-e2",
        ]

    async def test_listing_the_essays_of_an_unknown_batch_is_batch_not_found(
        self, store: BatchStore
    ) -> None:
        await store.add_spellcheck_essay(SpellcheckEssay("lone", "s-lone", "en", T0), [])
        with pytest.raises(BatchNotFound):
            await store.list_essays("no-such-batch", 10, -1)
        with pytest.raises(BatchNotFound):
            await store.list_essays("", 10, -1)  # a TriggerSpellcheck essay's "batch"
