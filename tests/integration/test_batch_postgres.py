"""The BatchService's PostgreSQL stores against a real, fresh database per test.

Invariants: one active run per batch, enforced by the database; a redelivered BatchStepCompleted
never dispatches twice; a state change and its outbox rows commit together or not at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from batch_server.conductor import Conductor
from batch_server.consumer import CompletionHandler, completion_from_proto
from batch_server.content.memory import MemoryContentStore
from batch_server.content.postgres import PostgresContentStore
from batch_server.domain.errors import BatchNotFound, ContentNotFound, RunConflict
from batch_server.domain.model import (
    Batch,
    BatchMetadata,
    EssayInput,
    PipelineRun,
    Resolution,
    RunStatus,
    StepPlan,
    StepStatus,
)
from batch_server.ports import ProgressWrite
from batch_server.service import BatchService
from batch_server.store.postgres import MIGRATIONS, PostgresBatchStore
from batch_server.watch import ProgressFeed
from generated.huleedu.events.v1 import events_pb2 as ev
from mesh.errors import BackendUnavailable
from mesh.events import envelope
from mesh.events.bus import Message
from mesh.events.memory import StoredRecord
from tests.support.batch import completion
from tests.support.stores import pool_of

PIPELINES = {
    "spellcheck": [StepPlan("spellcheck", "spellcheck")],
    "nlp": [StepPlan("spellcheck", "spellcheck"), StepPlan("nlp", "nlp", ("spellcheck",))],
}


class FakeConductor(Conductor):
    """Resolves from ``PIPELINES`` with no pruning; counts calls."""

    def __init__(self) -> None:
        self.registered: list[str] = []
        self.resolved = 0

    async def register(self, batch: Batch) -> None:
        self.registered.append(batch.batch_id)

    async def resolve(self, batch: Batch, target: str) -> Resolution:
        self.resolved += 1
        await asyncio.sleep(0.01)  # let concurrent callers interleave
        return Resolution(tuple(PIPELINES[target]), (), "v1")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Any]:
    async with pool_of(database_url, 12, MIGRATIONS) as created:
        yield created


@pytest.fixture
def store(pool: Any) -> PostgresBatchStore:
    return PostgresBatchStore(pool)


@pytest.fixture
def service(store: PostgresBatchStore) -> BatchService:
    return BatchService(store, MemoryContentStore(), FakeConductor(), ProgressFeed(0.05))


async def _outbox(pool: Any) -> list[ev.EventEnvelope]:
    found = await pool.fetch("SELECT payload FROM event_outbox ORDER BY id")
    return [envelope.decode(bytes(r["payload"])) for r in found]


async def _commands(pool: Any) -> list[ev.StepCommand]:
    return [e.step_command for e in await _outbox(pool) if e.HasField("step_command")]


def _message(payload: ev.BatchStepCompleted, offset: int = 0) -> Message:
    built = envelope.build(payload, source_service="conductor", event_id=f"done-{payload.step}")
    record = StoredRecord("t", 0, offset, 0, None, envelope.encode(built), ())
    return Message(record, built)


async def _new_batch(service: BatchService, n: int = 4, request_id: str = "") -> Batch:
    essays = [EssayInput(f"Essay {i}.", f"f{i}") for i in range(n)]
    return await service.create_batch(request_id, essays, BatchMetadata(name="x"))


async def test_every_enum_value_fits_the_schema(pool: Any) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO batches VALUES ('b', 'q', 'f', '', '', 'en', '{}', '{}', 0, now())"
        )
        for i, status in enumerate(RunStatus):
            await conn.execute(
                "INSERT INTO pipeline_runs (run_id, batch_id, request_id, pipeline, status, "
                "definition_version, correlation_id, version, created_at) "
                "VALUES ($1, 'b', $1, 'p', $2, 'v', 'c', 0, now())",
                f"r{i}",
                status.value if status.terminal else "completed",
            )
        for i, step_status in enumerate(StepStatus):
            await conn.execute(
                "INSERT INTO run_steps (run_id, position, step, command, depends_on, status) "
                "VALUES ('r0', $1, $2, 'c', '{}', $3)",
                i,
                f"s{i}",
                step_status.value,
            )
        await conn.execute("UPDATE pipeline_runs SET status = 'pending' WHERE run_id = 'r0'")
        await conn.execute("UPDATE pipeline_runs SET status = 'running' WHERE run_id = 'r0'")
        with pytest.raises(asyncpg.CheckViolationError):
            async with conn.transaction():  # a savepoint
                await conn.execute("UPDATE pipeline_runs SET status = 'bogus' WHERE run_id = 'r0'")


async def test_postgres_content_store(pool: Any) -> None:
    content = PostgresContentStore(pool)
    ids = await content.put_many(["one", "twö"])
    assert [await content.get(i) for i in ids] == ["one", "twö"]
    with pytest.raises(ContentNotFound):
        await content.get("missing")


async def test_a_closed_pool_is_backend_unavailable(database_url: str) -> None:
    closed = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    await closed.close()
    with pytest.raises(BackendUnavailable) as caught:
        await PostgresBatchStore(closed).get_batch("b")
    assert caught.value.backend == "postgresql"
    with pytest.raises(BackendUnavailable):
        await PostgresContentStore(closed).put_many(["x"])


async def test_create_batch_is_idempotent_under_concurrency(
    service: BatchService, pool: Any
) -> None:
    made = await asyncio.gather(*(_new_batch(service, 2, "same-key") for _ in range(5)))
    assert len({b.batch_id for b in made}) == 1
    assert await pool.fetchval("SELECT count(*) FROM batches") == 1
    created = [e for e in await _outbox(pool) if e.HasField("batch_created")]
    assert [e.batch_created.batch_id for e in created] == [made[0].batch_id]
    stored = await service.batch_status(made[0].batch_id)
    assert stored.batch == made[0]


async def test_concurrent_starts_give_one_run(service: BatchService, pool: Any) -> None:
    batch = await _new_batch(service)
    results = await asyncio.gather(
        *(service.start_pipeline(batch.batch_id, "nlp", "") for _ in range(8)),
        return_exceptions=True,
    )
    runs = [r for r in results if isinstance(r, PipelineRun)]
    conflicts = [r for r in results if isinstance(r, RunConflict)]
    assert len(runs) == 1
    assert len(conflicts) == 7
    assert {c.active_run_id for c in conflicts} == {runs[0].run_id}
    assert await pool.fetchval("SELECT count(*) FROM pipeline_runs") == 1
    assert [c.step for c in await _commands(pool)] == ["spellcheck"]


async def test_the_database_refuses_a_second_active_run(
    store: PostgresBatchStore, service: BatchService, pool: Any
) -> None:
    """Two units that skip the batch lock: the partial unique index still decides."""
    batch = await _new_batch(service)
    now = datetime.now(UTC)

    def run(run_id: str) -> PipelineRun:
        return PipelineRun(
            run_id, batch.batch_id, "p", RunStatus.RUNNING, "v", (), now, request_id=run_id
        )

    async def insert(run_id: str) -> None:
        async with store.progress() as unit:
            await unit.save(ProgressWrite(batch.batch_id, run=run(run_id), new_run=True))
            await asyncio.sleep(0.05)  # hold the transaction open while the other inserts

    results = await asyncio.gather(insert("r1"), insert("r2"), return_exceptions=True)
    conflicts = [r for r in results if isinstance(r, RunConflict)]
    assert len(conflicts) == 1
    assert await pool.fetchval("SELECT count(*) FROM pipeline_runs") == 1
    winner = await pool.fetchval("SELECT run_id FROM pipeline_runs")
    assert conflicts[0].active_run_id == winner


async def test_a_redelivered_completion_never_dispatches_twice(
    service: BatchService, store: PostgresBatchStore, pool: Any
) -> None:
    batch = await _new_batch(service)
    run = await service.start_pipeline(batch.batch_id, "nlp", "go")
    handler = CompletionHandler(store, ProgressFeed())
    done = completion(batch, "spellcheck", [0, 1, 3])
    assert await handler([_message(done)]) == []
    assert await handler([_message(done, 1), _message(done, 2)]) == []
    await asyncio.gather(handler([_message(done, 3)]), handler([_message(done, 4)]))
    commands = await _commands(pool)
    assert [c.step for c in commands] == ["spellcheck", "nlp"]
    nlp = commands[1]
    assert [(e.essay_id, e.text_storage_id) for e in nlp.essays] == [
        (batch.essays[i].essay_id, f"spellcheck-{i}") for i in (0, 1, 3)
    ]
    assert nlp.run_id == run.run_id
    stored = await store.get_run(run.run_id)
    assert stored is not None
    assert stored.version == 3  # spellcheck dispatched, satisfied; nlp dispatched
    assert await pool.fetchval("SELECT count(*) FROM run_dispatches") == 2
    assert await handler([_message(completion(batch, "nlp", [0, 1, 3]))]) == []
    finished = await store.get_run(run.run_id)
    assert finished is not None
    assert finished.status is RunStatus.COMPLETED_WITH_FAILURES
    ended = [
        e.pipeline_run_completed
        for e in await _outbox(pool)
        if e.HasField("pipeline_run_completed")
    ]
    assert [(e.run_id, e.succeeded_essay_count, e.failed_essay_count) for e in ended] == [
        (run.run_id, 3, 1)
    ]
    essays = (await store.get_batch(batch.batch_id)).essays
    assert [e.current_storage_id for e in essays][:2] == ["nlp-0", "nlp-1"]


async def test_an_unknown_batch_is_rejected_and_the_rest_is_handled(
    service: BatchService, store: PostgresBatchStore, pool: Any
) -> None:
    batch = await _new_batch(service)
    await service.start_pipeline(batch.batch_id, "spellcheck", "")
    handler = CompletionHandler(store, ProgressFeed())
    stranger = ev.BatchStepCompleted(batch_id="nope", step="spellcheck", succeeded=0, total=0)
    good = _message(completion(batch, "spellcheck", [0, 1, 2, 3]), 1)
    rejections = await handler([_message(stranger), good])
    assert len(rejections) == 1
    assert isinstance(rejections[0].error, BatchNotFound)
    assert not rejections[0].error.retriable
    assert (await service.batch_status(batch.batch_id)).runs[0].status is RunStatus.COMPLETED


async def test_a_state_change_and_its_outbox_rows_commit_together(
    service: BatchService, store: PostgresBatchStore, pool: Any
) -> None:
    batch = await _new_batch(service)
    before = len(await _outbox(pool))
    run = await service.start_pipeline(batch.batch_id, "spellcheck", "")
    rows = await pool.fetch("SELECT event_id FROM event_outbox ORDER BY id")
    assert len(rows) == before + 1
    [command] = await _commands(pool)
    assert command.run_id == run.run_id

    done = completion_from_proto(completion(batch, "spellcheck", [0, 1, 2, 3]))
    handler = CompletionHandler(store, ProgressFeed())

    async def crash_after_saving() -> None:
        async with store.progress() as unit:
            progress = (await unit.load([batch.batch_id]))[batch.batch_id]
            _, write, _ = handler._apply(progress, done)
            assert write is not None
            assert write.commands == ()
            assert len(write.events) == 1  # the run ends: PipelineRunCompleted
            await unit.save(write)
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        await crash_after_saving()
    assert len(await _outbox(pool)) == before + 1
    unchanged = await store.get_run(run.run_id)
    assert unchanged is not None
    assert unchanged.status is RunStatus.RUNNING
    assert await pool.fetchval("SELECT count(*) FROM batch_step_results") == 0


async def test_listing_and_watching_with_postgres(
    service: BatchService, store: PostgresBatchStore
) -> None:
    made = [await _new_batch(service, 1) for _ in range(5)]
    first = await service.list_batches(2, None)
    assert [b.batch_id for b in first.batches] == [made[4].batch_id, made[3].batch_id]
    rest = await service.list_batches(10, first.next_cursor)
    assert [b.batch_id for b in rest.batches] == [b.batch_id for b in reversed(made[:3])]
    assert rest.next_cursor is None

    batch = made[0]
    await service.start_pipeline(batch.batch_id, "nlp", "")
    updates = []
    started = asyncio.Event()

    async def watch() -> None:
        async for update in service.watch(batch.batch_id, ""):
            updates.append((update.changed_step, update.run.status))
            started.set()

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(started.wait(), 10)
    handler = CompletionHandler(store, ProgressFeed())  # another "replica": no shared feed
    await handler([_message(completion(batch, "spellcheck", [0]))])
    await handler([_message(completion(batch, "nlp", [0]))])
    await asyncio.wait_for(watcher, 10)
    assert updates == [
        ("", RunStatus.RUNNING),
        ("spellcheck", RunStatus.RUNNING),
        ("nlp", RunStatus.RUNNING),
        ("nlp", RunStatus.COMPLETED),
    ]
