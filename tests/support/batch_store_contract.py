"""The batch store contract: every ``BatchStore`` must pass ``BatchStoreContract``.

``tests/unit/test_batch_store_memory.py`` runs it against the in-memory store,
``tests/integration/test_batch_store_contract.py`` against PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from batch_server.domain.errors import BatchNotFound
from batch_server.domain.model import Batch, BatchMetadata, Essay
from batch_server.ports import BatchStore, NewBatch

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def batch(
    batch_id: str,
    metadata: BatchMetadata | None = None,
    created_at: datetime = T0,
    essays: int = 2,
) -> Batch:
    return Batch(
        batch_id,
        tuple(Essay(f"{batch_id}-e{i}", f"f{i}", f"s{i}", f"s{i}") for i in range(essays)),
        metadata or BatchMetadata(),
        created_at,
    )


async def add(store: BatchStore, *batches: Batch) -> None:
    for one in batches:
        await store.create_batch(NewBatch(one, f"request-{one.batch_id}", "fingerprint"), [])


class BatchStoreContract:
    """Behaviour every ``BatchStore`` shares; subclasses provide the ``store`` fixture."""

    async def test_metadata_is_updated_over_the_metadata_read(self, store: BatchStore) -> None:
        original = batch("b1", BatchMetadata("9B", "ENG5", "en", {"a": True}, {"t": "1"}))
        await add(store, original)
        new = BatchMetadata("9C", "ENG6", "en", {"a": False, "b": True}, {"t": "2", "u": "3"})
        updated = await store.update_metadata("b1", original.metadata, new)
        assert updated == Batch("b1", original.essays, new, T0)
        assert await store.get_batch("b1") == updated
        [summary] = await store.list_batches(10, None)
        assert summary.name == "9C"
        again = await store.update_metadata("b1", new, new)  # the same update again
        assert again == updated

    async def test_metadata_changed_by_another_update_is_not_overwritten(
        self, store: BatchStore
    ) -> None:
        original = batch("b1", BatchMetadata(name="9B", labels={"t": "1"}))
        await add(store, original)
        winner = BatchMetadata(name="9C", labels={"t": "1"})
        assert await store.update_metadata("b1", original.metadata, winner) is not None
        loser = BatchMetadata(name="9D", labels={"t": "1"})
        assert await store.update_metadata("b1", original.metadata, loser) is None
        assert (await store.get_batch("b1")).metadata == winner
        for stale in (  # each field takes part in the comparison
            BatchMetadata(name="9C", labels={"t": "2"}),
            BatchMetadata(name="9C", labels={"t": "1"}, flags={"a": True}),
            BatchMetadata(name="9C", labels={"t": "1"}, course_code="X"),
        ):
            assert await store.update_metadata("b1", stale, loser) is None
        assert (await store.get_batch("b1")).metadata == winner

    async def test_updating_an_unknown_batch_is_not_found(self, store: BatchStore) -> None:
        with pytest.raises(BatchNotFound):
            await store.update_metadata("nope", BatchMetadata(), BatchMetadata(name="x"))

    async def test_a_request_keeps_its_fingerprint_and_finds_the_updated_batch(
        self, store: BatchStore
    ) -> None:
        original = batch("b1", BatchMetadata(name="9B"))
        await add(store, original)
        await store.update_metadata("b1", original.metadata, BatchMetadata(name="9C"))
        found = await store.batch_for_request("request-b1")
        assert found is not None
        assert (found.fingerprint, found.batch.metadata.name) == ("fingerprint", "9C")
        assert (found.batch.created_at, found.batch.essays) == (T0, original.essays)
