"""The BatchService's kept progress (PostgreSQL): what each unit settles is what a fresh read of
the batch returns, and a unit advances on it only while the batch's stamp is the one this store
committed, never after another writer, a failed unit or another replica."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from batch_server.conductor import Conductor
from batch_server.consumer import CompletionHandler, completion_from_proto
from batch_server.content.memory import MemoryContentStore
from batch_server.domain.errors import RunConflict
from batch_server.domain.model import (
    Batch,
    BatchMetadata,
    EssayInput,
    MetadataUpdate,
    Resolution,
    RunStatus,
    StepPlan,
    StepStatus,
)
from batch_server.domain.run import BatchProgress
from batch_server.metrics import BatchMetrics
from batch_server.service import BatchService
from batch_server.store.postgres import MIGRATIONS, PostgresBatchStore, _PostgresUnit
from batch_server.watch import ProgressFeed
from generated.huleedu.events.v1 import events_pb2 as ev
from mesh.events import envelope
from mesh.events.bus import Message
from mesh.events.memory import StoredRecord
from mesh.postgres import outbox
from tests.support.batch import completion
from tests.support.stores import pool_of

PIPELINES = {
    "nlp": [StepPlan("spellcheck", "spellcheck"), StepPlan("nlp", "nlp", ("spellcheck",))],
    "feedback": [
        StepPlan("spellcheck", "spellcheck"),
        StepPlan("nlp", "nlp", ("spellcheck",)),
        StepPlan("ai_feedback", "ai_feedback", ("spellcheck", "nlp")),
    ],
}


class FakeConductor(Conductor):
    """Resolves from ``PIPELINES`` with no pruning; reopens the essays it is told failed."""

    def __init__(self) -> None:
        self.failed: dict[str, tuple[str, ...]] = {}

    async def register(self, batch: Batch) -> None:
        return None

    async def resolve(self, batch: Batch, target: str) -> Resolution:
        return Resolution(tuple(PIPELINES[target]), (), "v1")

    async def reopen(
        self, batch_id: str, run_id: str, attempt: int, steps: Sequence[str]
    ) -> dict[str, tuple[str, ...]]:
        return {step: self.failed.get(step, ()) for step in steps}


class Rollback(Exception):
    def __init__(self, progress: BatchProgress) -> None:
        self.progress = progress


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Any]:
    async with pool_of(database_url, 12, MIGRATIONS) as created:
        yield created


class Replica:
    """A BatchService store with its metrics, its completion handler and its service."""

    def __init__(self, pool: Any, kept_essays: int = 20_000) -> None:
        self.registry = CollectorRegistry()
        self.store = PostgresBatchStore(pool, kept_essays, BatchMetrics(self.registry))
        self.conductor = FakeConductor()
        self.service = BatchService(
            self.store, MemoryContentStore(), self.conductor, ProgressFeed(0.05)
        )
        self.handler = CompletionHandler(self.store, ProgressFeed())

    def counted(self) -> tuple[float, float]:
        """(used, read): batches its units advanced on kept progress, and read."""
        found = [
            self.registry.get_sample_value("batch_kept_progress_total", {"result": result})
            for result in ("used", "read")
        ]
        return (found[0] or 0.0, found[1] or 0.0)

    async def complete(self, batch: Batch, step: str, ok: Sequence[int]) -> None:
        assert await self.handler([message(completion(batch, step, ok))]) == []

    async def loaded(self, batch_id: str) -> BatchProgress:
        """What this store's next unit loads for the batch, in a unit rolled back."""
        try:
            async with self.store.progress() as unit:
                raise Rollback((await unit.load([batch_id]))[batch_id])
        except Rollback as rolled_back:
            return rolled_back.progress
        raise AssertionError("unreachable")


async def read(pool: Any, batch_id: str) -> BatchProgress:
    """The batch's progress read whole from PostgreSQL (a store that keeps nothing)."""
    return await Replica(pool, kept_essays=0).loaded(batch_id)


_offsets = iter(range(1_000_000))


def message(payload: ev.BatchStepCompleted) -> Message:
    built = envelope.build(payload, source_service="conductor")
    record = StoredRecord("t", 0, next(_offsets), 0, None, envelope.encode(built), ())
    return Message(record, built)


async def new_batch(replica: Replica, n: int = 6) -> Batch:
    essays = [EssayInput(f"Essay {i}.", f"f{i}") for i in range(n)]
    return await replica.service.create_batch("", essays, BatchMetadata(name="x"))


async def commands(pool: Any) -> list[ev.StepCommand]:
    found = await pool.fetch("SELECT payload FROM event_outbox ORDER BY id")
    decoded = [envelope.decode(bytes(r["payload"])) for r in found]
    return [e.step_command for e in decoded if e.HasField("step_command")]


async def test_every_unit_settles_what_a_fresh_read_returns(pool: Any) -> None:
    """Each kind of unit, then a probe of the store's next load: it advances on the kept
    progress (``used``), and that progress equals the batch read whole."""
    replica = Replica(pool)
    batch = await new_batch(replica)
    b = batch.batch_id
    used = 0.0

    async def settled_as_read() -> None:
        nonlocal used
        kept = await replica.loaded(b)
        used += 1
        assert replica.counted()[0] == used, "the probe did not advance on kept progress"
        assert kept == await read(pool, b)

    run = await replica.service.start_pipeline(b, "feedback", "first")
    await settled_as_read()
    await replica.complete(batch, "spellcheck", [0, 1, 2, 4, 5])  # texts change; nlp dispatched
    await settled_as_read()
    await replica.complete(batch, "spellcheck", [0, 1, 2, 4, 5])  # a redelivery: no write
    await settled_as_read()
    await replica.complete(batch, "ai_feedback", [0])  # not dispatched in the run: recorded
    await settled_as_read()
    await replica.complete(batch, "nlp", [0, 1, 2])
    await settled_as_read()
    await replica.complete(batch, "ai_feedback", [0, 1])  # the run ends
    await settled_as_read()
    stored = await replica.store.get_run(run.run_id)
    assert stored is not None
    assert stored.status is RunStatus.FAILED
    replica.conductor.failed = {"ai_feedback": (batch.essays[2].essay_id,)}
    await replica.service.retry_run(b, run.run_id, ["ai_feedback"], "again")
    await settled_as_read()
    await replica.service.cancel_run(b, run.run_id, "enough")
    await settled_as_read()
    await replica.service.start_pipeline(b, "nlp", "second")
    await settled_as_read()
    await replica.complete(batch, "spellcheck", [])  # unsatisfied: the run fails at once
    await settled_as_read()


async def test_consecutive_units_advance_on_kept_progress_and_a_replica_forces_a_read(
    pool: Any,
) -> None:
    one, two = Replica(pool), Replica(pool)
    batch = await new_batch(one)
    await one.service.start_pipeline(batch.batch_id, "feedback", "go")  # reads: nothing kept
    await one.complete(batch, "spellcheck", [0, 1, 2, 3, 4, 5])
    await one.complete(batch, "nlp", [0, 1, 2, 3])
    assert one.counted() == (2.0, 1.0)
    await two.complete(batch, "nlp", [0, 1, 2, 3])  # a redelivery to the other replica
    await one.complete(batch, "ai_feedback", [0, 1, 2, 3])
    assert one.counted() == (2.0, 2.0)
    assert two.counted() == (0.0, 1.0)
    steps = [c.step for c in await commands(pool)]
    assert steps == ["spellcheck", "nlp", "ai_feedback"]
    texts = [e.text_storage_id for e in (await commands(pool))[2].essays]
    assert texts == [f"nlp-{i}" for i in range(4)]  # each essay's latest text


@pytest.mark.parametrize(
    ("query", "target"),
    [
        ("UPDATE batch_essays SET current_storage_id = 'by-hand' WHERE position = 0", None),
        ("UPDATE batch_step_results SET succeeded_essays = '{}'::json, succeeded = 0", None),
        ("UPDATE pipeline_runs SET correlation_id = 'by-hand'", None),
        ("UPDATE run_steps SET timed_out = 1", None),
        ("DELETE FROM batch_step_results", None),
        ("TRUNCATE batch_step_results", None),
        # rows moved to another batch ($2): the batch they left is stamped too
        ("UPDATE batch_step_results SET batch_id = $2 WHERE batch_id = $1", "empty"),
        ("UPDATE pipeline_runs SET batch_id = $2 WHERE batch_id = $1", "empty"),
        (
            "UPDATE run_steps SET run_id = (SELECT run_id FROM pipeline_runs WHERE batch_id = $2)"
            " WHERE run_id IN (SELECT run_id FROM pipeline_runs WHERE batch_id = $1)"
            " AND step = 'ai_feedback'",
            "other",
        ),
    ],
)
async def test_a_write_by_another_hand_makes_the_next_unit_read_the_batch(
    pool: Any, query: str, target: str | None
) -> None:
    replica = Replica(pool)
    batch, other, empty = [await new_batch(replica) for _ in range(3)]
    await replica.service.start_pipeline(other.batch_id, "nlp", "other")
    for step in ("spellcheck", "nlp"):  # the other batch's run ends; the empty one has none
        await replica.complete(other, step, [0, 1, 2, 3, 4, 5])
    await replica.service.start_pipeline(batch.batch_id, "feedback", "go")
    await replica.complete(batch, "spellcheck", [0, 1, 2, 3, 4, 5])
    used, read_before = replica.counted()
    async with pool.acquire() as conn:
        if target is None:
            await conn.execute(query)
        else:
            moved_to = {"other": other, "empty": empty}[target].batch_id
            await conn.execute(query, batch.batch_id, moved_to)
    loaded = await replica.loaded(batch.batch_id)
    assert replica.counted() == (used, read_before + 1)
    assert loaded == await read(pool, batch.batch_id)


async def test_another_hand_stamps_a_batch_once_per_transaction(pool: Any) -> None:
    replica = Replica(pool)
    batch = await new_batch(replica)
    await replica.service.start_pipeline(batch.batch_id, "feedback", "go")
    last = "SELECT last_value FROM batch_progress_stamps"
    async with pool.acquire() as conn:
        before = await conn.fetchval(last)
        async with conn.transaction():
            await conn.execute("UPDATE batch_essays SET current_storage_id = 'by-hand'")
            await conn.execute("UPDATE run_steps SET timed_out = 1")
        assert await conn.fetchval(last) == before + 1  # six essays, four steps: one stamp
    assert await replica.loaded(batch.batch_id) == await read(pool, batch.batch_id)
    assert replica.counted()[1] == 2.0  # read by StartPipeline, then after the other hand


async def test_a_repeated_completion_that_advances_a_new_run_leaves_the_texts_as_stored(
    pool: Any,
) -> None:
    replica = Replica(pool)
    batch = await new_batch(replica)
    b = batch.batch_id
    await replica.service.start_pipeline(b, "feedback", "first")
    for step in ("spellcheck", "nlp", "ai_feedback"):
        await replica.complete(batch, step, [0, 1, 2, 3, 4, 5])  # texts: ai_feedback-i
    await replica.service.start_pipeline(b, "feedback", "second")
    await replica.complete(batch, "spellcheck", [0, 1, 2, 3, 4, 5])  # the stored result again
    assert await replica.loaded(b) == await read(pool, b)
    nlp = (await commands(pool))[-1]
    assert [e.text_storage_id for e in nlp.essays] == [f"ai_feedback-{i}" for i in range(6)]


async def test_a_retry_raced_by_a_start_leaves_the_started_run_active(pool: Any) -> None:
    replica = Replica(pool)
    batch = await new_batch(replica)
    b = batch.batch_id
    first = await replica.service.start_pipeline(b, "nlp", "first")
    await replica.complete(batch, "spellcheck", [0, 1, 2, 3, 4])
    await replica.complete(batch, "nlp", [0, 1, 2, 3, 4])  # ends with a failure
    started: list[Any] = []
    reopen = replica.conductor.reopen

    async def raced(
        batch_id: str, run_id: str, attempt: int, steps: Sequence[str]
    ) -> dict[str, tuple[str, ...]]:
        started.append(await replica.service.start_pipeline(b, "nlp", "second"))
        return await reopen(batch_id, run_id, attempt, steps)  # nothing to send again

    replica.conductor.reopen = raced  # type: ignore[method-assign]
    with pytest.raises(RunConflict):
        await replica.service.retry_run(b, first.run_id, [], "again")
    await replica.complete(batch, "spellcheck", [0, 1, 2, 3, 4, 5])
    second = await replica.store.get_run(started[0].run_id)
    assert second is not None
    assert [s.status for s in second.steps] == [StepStatus.SATISFIED, StepStatus.DISPATCHED]
    assert await replica.loaded(b) == await read(pool, b)


async def test_the_deadline_watchs_lease_leaves_kept_progress_valid(pool: Any) -> None:
    replica = Replica(pool)
    batch = await new_batch(replica)
    await replica.service.start_pipeline(batch.batch_id, "nlp", "go")
    async with pool.acquire() as conn:
        await conn.execute("UPDATE run_steps SET expiring_since = now()")
    used, _ = replica.counted()
    await replica.loaded(batch.batch_id)
    assert replica.counted()[0] == used + 1


async def test_a_metadata_update_reaches_the_next_dispatch_of_kept_progress(pool: Any) -> None:
    replica = Replica(pool)
    batch = await new_batch(replica)
    await replica.service.start_pipeline(batch.batch_id, "nlp", "go")
    update = MetadataUpdate(frozenset({"course_code"}), BatchMetadata(course_code="SV2"))
    await replica.service.update_batch(batch.batch_id, update)
    await replica.complete(batch, "spellcheck", [0, 1, 2, 3, 4, 5])
    assert replica.counted()[0] == 1.0  # the completion advanced on the kept progress
    nlp = (await commands(pool))[-1]
    assert (nlp.step, nlp.parameters["course_code"]) == ("nlp", "SV2")


async def test_a_unit_that_fails_keeps_nothing(pool: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    replica = Replica(pool)
    batch = await new_batch(replica)
    await replica.service.start_pipeline(batch.batch_id, "nlp", "go")
    enqueue = outbox.enqueue

    async def failing(conn: Any, events: Any) -> int:
        raise asyncpg.exceptions.ConnectionDoesNotExistError("gone mid-write")

    monkeypatch.setattr(outbox, "enqueue", failing)
    with pytest.raises(Exception, match="gone mid-write"):
        await replica.complete(batch, "spellcheck", [0, 1, 2, 3, 4, 5])
    monkeypatch.setattr(outbox, "enqueue", enqueue)
    used, read_before = replica.counted()
    loaded = await replica.loaded(batch.batch_id)
    assert replica.counted() == (used, read_before + 1)
    assert loaded == await read(pool, batch.batch_id)
    assert loaded.results == {}  # the failed completion left nothing behind


async def test_concurrent_completions_of_one_batch_each_dispatch_once(pool: Any) -> None:
    replica = Replica(pool)
    batch = await new_batch(replica)
    await replica.service.start_pipeline(batch.batch_id, "feedback", "go")
    await asyncio.gather(
        *(replica.complete(batch, "spellcheck", [0, 1, 2, 3, 4, 5]) for _ in range(4))
    )
    await asyncio.gather(*(replica.complete(batch, "nlp", [0, 1, 2, 3]) for _ in range(4)))
    steps = [c.step for c in await commands(pool)]
    assert steps == ["spellcheck", "nlp", "ai_feedback"]
    assert await replica.loaded(batch.batch_id) == await read(pool, batch.batch_id)


async def test_capacity_zero_reads_every_time(pool: Any) -> None:
    replica = Replica(pool, kept_essays=0)
    batch = await new_batch(replica)
    await replica.service.start_pipeline(batch.batch_id, "nlp", "go")
    await replica.complete(batch, "spellcheck", [0, 1, 2, 3, 4, 5])
    await replica.complete(batch, "nlp", [0, 1, 2, 3, 4, 5])
    assert replica.counted() == (0.0, 3.0)


async def test_a_unit_writes_only_the_essay_lists_that_changed(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step whose essay lists PostgreSQL holds as they are is updated without them (a list of
    a large batch is a large value); one whose lists changed is written whole."""
    whole: list[set[str] | None] = []
    upsert_steps = _PostgresUnit._upsert_steps

    async def recording(unit: Any, run: Any, only: set[str] | None = None) -> None:
        whole.append(None if only is None else set(only))
        await upsert_steps(unit, run, only)

    monkeypatch.setattr(_PostgresUnit, "_upsert_steps", recording)
    replica = Replica(pool)
    batch = await new_batch(replica)
    b = batch.batch_id
    await replica.service.start_pipeline(b, "feedback", "go")
    assert whole == [None]  # a new run: every step
    await replica.complete(batch, "spellcheck", [0, 1, 2, 3, 4, 5])  # spellcheck is satisfied
    await replica.complete(batch, "nlp", [0, 1, 2, 3])  # nlp is satisfied
    assert whole[1:] == [{"nlp"}, {"ai_feedback"}]  # the steps dispatched, not the completed
    progress = await read(pool, b)
    assert progress == await replica.loaded(b)
    assert progress.active_run is not None
    assert [(s.name, s.status, len(s.essays)) for s in progress.active_run.steps] == [
        ("spellcheck", StepStatus.SATISFIED, 6),
        ("nlp", StepStatus.SATISFIED, 6),
        ("ai_feedback", StepStatus.DISPATCHED, 4),
    ]
    # Two completions in one poll (one unit): the second knows what the first wrote.
    whole.clear()
    second = await new_batch(replica)
    await replica.service.start_pipeline(second.batch_id, "feedback", "go")
    polled = [
        completion(second, "spellcheck", [0, 1, 2, 3, 4, 5]),
        completion(second, "nlp", [0, 1, 2, 3]),
    ]
    assert await replica.handler([message(c) for c in polled]) == []
    assert whole == [None, {"nlp"}, {"ai_feedback"}]
    assert await read(pool, second.batch_id) == await replica.loaded(second.batch_id)


async def test_a_step_row_missing_under_the_unit_is_written_whole(
    pool: Any, caplog: pytest.LogCaptureFixture
) -> None:
    replica = Replica(pool)
    batch = await new_batch(replica)
    b = batch.batch_id
    run = await replica.service.start_pipeline(b, "nlp", "go")
    done = completion_from_proto(completion(batch, "spellcheck", [0, 1, 2, 3, 4, 5]))
    async with replica.store.progress() as unit:
        progress = (await unit.load([b]))[b]
        # gone under a unit that knows the row: what a bug elsewhere would leave
        await unit._conn.execute(
            "DELETE FROM run_steps WHERE run_id = $1 AND step = 'spellcheck'", run.run_id
        )
        after, write, _ = replica.handler._apply(progress, done)
        assert write is not None
        await unit.save(write)
        unit.settle(after)
    assert "step rows missing" in caplog.text
    stored = await read(pool, b)
    assert stored == after
    assert stored.active_run is not None
    assert [(s.name, s.status, len(s.essays)) for s in stored.active_run.steps] == [
        ("spellcheck", StepStatus.SATISFIED, 6),
        ("nlp", StepStatus.DISPATCHED, 6),
    ]
