"""The batch store contract: every ``BatchStore`` must pass ``BatchStoreContract``.

``tests/unit/test_batch_store_memory.py`` runs it against the in-memory store,
``tests/integration/test_batch_store_contract.py`` against PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batch_server.domain.errors import BatchNotFound
from batch_server.domain.model import Batch, BatchMetadata, Essay, PipelineRun, RunStatus
from batch_server.domain.paging import BatchFilter, PageCursor
from batch_server.ports import BatchStore, NewBatch, ProgressWrite

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


async def add_run(
    store: BatchStore, batch_id: str, run_id: str, status: RunStatus, created_at: datetime
) -> None:
    """A run of the batch with no steps, newer than the batch's runs before it."""
    finished = created_at if status.terminal else None
    run = PipelineRun(
        run_id, batch_id, "spellcheck", status, "v1", (), created_at, finished, request_id=run_id
    )
    async with store.progress() as unit:
        await unit.load([batch_id])
        await unit.save(ProgressWrite(batch_id, run=run, new_run=True))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


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

    # --- listing ------------------------------------------------------------------------

    async def _listed(self, store: BatchStore, filters: BatchFilter, limit: int = 50) -> list[str]:
        return [s.batch_id for s in await store.list_batches(limit, None, filters)]

    async def test_the_newest_run_s_status_selects(self, store: BatchStore) -> None:
        await add(store, batch("none", created_at=at(0)), batch("done", created_at=at(1)))
        await add(store, batch("again", created_at=at(2)), batch("going", created_at=at(3)))
        await add_run(store, "done", "r1", RunStatus.COMPLETED, at(10))
        await add_run(store, "again", "r2", RunStatus.FAILED, at(10))  # failed, then
        await add_run(store, "again", "r3", RunStatus.COMPLETED, at(11))  # completed
        await add_run(store, "going", "r4", RunStatus.RUNNING, at(10))
        failed = frozenset({RunStatus.FAILED})
        assert await self._listed(store, BatchFilter(failed)) == []  # only the newest counts
        completed = frozenset({RunStatus.COMPLETED})
        assert await self._listed(store, BatchFilter(completed)) == ["again", "done"]
        assert await self._listed(store, BatchFilter(frozenset({None}))) == ["none"]
        either = BatchFilter(frozenset({None, RunStatus.RUNNING}))
        assert await self._listed(store, either) == ["going", "none"]
        everything = await store.list_batches(50, None)
        assert [(s.batch_id, s.latest_run_status) for s in everything] == [
            ("going", RunStatus.RUNNING),
            ("again", RunStatus.COMPLETED),
            ("done", RunStatus.COMPLETED),
            ("none", None),
        ]

    async def test_labels_must_all_be_there_with_equal_values(self, store: BatchStore) -> None:
        labelled = {
            "both": {"term": "spring", "room": "4"},
            "term": {"term": "spring"},
            "other": {"term": "Spring"},
            "none": {},
        }
        for n, (batch_id, labels) in enumerate(labelled.items()):
            await add(store, batch(batch_id, BatchMetadata(labels=labels), created_at=at(n)))
        spring = BatchFilter(labels={"term": "spring"})
        assert await self._listed(store, spring) == ["term", "both"]
        both = BatchFilter(labels={"term": "spring", "room": "4"})
        assert await self._listed(store, both) == ["both"]
        assert await self._listed(store, BatchFilter(labels={"room": ""})) == []
        summaries = {s.batch_id: dict(s.labels) for s in await store.list_batches(50, None)}
        assert summaries == labelled

    async def test_creation_time_bounds_are_inclusive_then_exclusive(
        self, store: BatchStore
    ) -> None:
        for n in range(5):
            await add(store, batch(f"b{n}", created_at=at(n)))
        window = BatchFilter(created_after=at(1), created_before=at(3))
        assert await self._listed(store, window) == ["b2", "b1"]
        assert await self._listed(store, BatchFilter(created_after=at(3))) == ["b4", "b3"]
        assert await self._listed(store, BatchFilter(created_before=at(1))) == ["b0"]
        empty = BatchFilter(created_after=at(3), created_before=at(3))
        assert await self._listed(store, empty) == []

    async def test_filters_page_with_the_cursor_and_the_limit(self, store: BatchStore) -> None:
        for n in range(6):
            labels = {"parity": "even" if n % 2 == 0 else "odd"}
            await add(store, batch(f"b{n}", BatchMetadata(labels=labels), created_at=at(n // 2)))
        even = BatchFilter(labels={"parity": "even"})
        first = await store.list_batches(2, None, even)
        assert [s.batch_id for s in first] == ["b4", "b2"]
        cursor = PageCursor(first[-1].created_at, first[-1].batch_id)
        assert [s.batch_id for s in await store.list_batches(2, cursor, even)] == ["b0"]
