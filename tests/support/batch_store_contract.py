"""The batch store contract: every ``BatchStore`` must pass ``BatchStoreContract``.

``tests/unit/test_batch_store_memory.py`` runs it against the in-memory store,
``tests/integration/test_batch_store_contract.py`` against PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from batch_server.domain.errors import BatchNotFound, RunConflict
from batch_server.domain.model import (
    Batch,
    BatchMetadata,
    Essay,
    PipelineRun,
    RunStatus,
    RunStep,
    StepStatus,
    Transition,
)
from batch_server.domain.paging import BatchFilter, PageCursor
from batch_server.ports import BatchStore, DueStep, NewBatch, ProgressWrite, RetryRecord

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


def _run_with_steps(run_id: str, batch_id: str, status: RunStatus, *steps: RunStep) -> PipelineRun:
    return PipelineRun(run_id, batch_id, "nlp", status, "v1", steps, T0, request_id=f"req-{run_id}")


DISPATCHED = RunStep(
    "spellcheck",
    "spellcheck",
    (),
    StepStatus.DISPATCHED,
    total=2,
    essays=("b-e0", "b-e1"),
    attempt=2,
    timeout=30.0,
    deadline=at(1),
    retry_essays=("b-e1",),
)


class RunControlStoreContract:
    """Attempts, deadlines and retry records, on every ``BatchStore``."""

    async def test_a_run_keeps_its_attempt_its_steps_deadlines_and_its_transitions(
        self, store: BatchStore
    ) -> None:
        await add(store, batch("b"))
        run = dataclasses.replace(
            _run_with_steps("r1", "b", RunStatus.RUNNING, DISPATCHED), attempt=2
        )
        moved = Transition(
            "r1",
            1,
            "spellcheck",
            StepStatus.DISPATCHED,
            0,
            0,
            2,
            RunStatus.RUNNING,
            attempt=2,
            step_attempt=2,
            timed_out=0,
            deadline=at(1),
            cancel_reason="",
        )
        async with store.progress() as unit:
            await unit.load(["b"])
            await unit.save(ProgressWrite("b", run=run, new_run=True, transitions=(moved,)))
        stored = await store.get_run("r1")
        assert stored is not None
        assert stored.attempt == 2
        assert stored.steps == (DISPATCHED,)
        assert await store.transitions_after("r1", 0) == [moved]

    async def test_due_steps_are_claimed_once_per_lease(self, store: BatchStore) -> None:
        await add(store, batch("b"))
        run = _run_with_steps("r1", "b", RunStatus.RUNNING, DISPATCHED)
        async with store.progress() as unit:
            await unit.load(["b"])
            await unit.save(ProgressWrite("b", run=run, new_run=True))
        assert await store.claim_due(at(0.5), 30, 10) == []  # not due yet
        assert await store.claim_due(at(2), 30, 10) == [DueStep("b", "r1", "spellcheck", 2)]
        assert await store.claim_due(at(2.1), 30, 10) == []  # claimed within the lease
        assert await store.claim_due(at(3), 30, 10) == [DueStep("b", "r1", "spellcheck", 2)]

    async def test_a_completed_or_cancelled_step_is_never_due(self, store: BatchStore) -> None:
        await add(store, batch("b"))
        cancelled = dataclasses.replace(DISPATCHED, status=StepStatus.CANCELLED, deadline=None)
        run = _run_with_steps("r1", "b", RunStatus.CANCELLED, cancelled)
        async with store.progress() as unit:
            await unit.load(["b"])
            await unit.save(ProgressWrite("b", run=run, new_run=True))
        assert await store.claim_due(at(60), 30, 10) == []

    async def test_a_retry_is_recorded_under_its_request_id(self, store: BatchStore) -> None:
        await add(store, batch("b"))
        await add_run(store, "b", "r1", RunStatus.FAILED, at(1))
        finished = await store.get_run("r1")
        assert finished is not None
        again = dataclasses.replace(finished, status=RunStatus.RUNNING, attempt=2)
        record = RetryRecord("r1", 2, "key-1", ("spellcheck",), (("spellcheck", 3),))
        async with store.progress() as unit:
            await unit.load(["b"])
            await unit.save(ProgressWrite("b", run=again, retry=record))
        assert await store.retry_for_request("r1", "key-1") == record
        assert await store.retry_for_request("r1", "key-2") is None
        assert (await store.get_run("r1")).attempt == 2  # type: ignore[union-attr]

    async def test_a_retry_while_another_run_is_active_is_a_conflict(
        self, store: BatchStore
    ) -> None:
        await add(store, batch("b"))
        await add_run(store, "b", "r1", RunStatus.FAILED, at(1))
        await add_run(store, "b", "r2", RunStatus.RUNNING, at(2))
        finished = await store.get_run("r1")
        assert finished is not None
        again = dataclasses.replace(finished, status=RunStatus.RUNNING, attempt=2)
        record = RetryRecord("r1", 2, "key-1", (), ())

        async def retried() -> None:
            async with store.progress() as unit:
                await unit.load(["b"])
                await unit.save(ProgressWrite("b", run=again, retry=record))

        with pytest.raises(RunConflict) as caught:
            await retried()
        assert caught.value.active_run_id == "r2"
        assert (await store.get_run("r1")).status is RunStatus.FAILED  # type: ignore[union-attr]
