"""The PostgreSQL store's kept tallies: used only while the batch's stamp is the one this store
committed, never after another writer, a failed write or a re-created batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from conductor_server.domain.counting import Verdict
from conductor_server.domain.model import BatchRegistration, Outcome
from conductor_server.metrics import ConductorMetrics
from conductor_server.store.postgres import PostgresStateStore
from mesh.postgres import outbox
from tests.support.state_contract import ESSAYS, STEPS, rec
from tests.support.stores import pool_of

S, F = Outcome.SUCCEEDED, Outcome.FAILED


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Any]:
    async with pool_of(database_url) as pool:
        yield pool


async def execute(pool: Any, query: str, *args: object) -> None:
    async with pool.acquire() as conn:
        await conn.execute(query, *args)


async def unstamped(pool: Any, query: str) -> None:
    """Run ``query`` in a transaction marked as stamping its writes, without stamping them."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT set_config('conductor.stamped', 'on', true)")
        await conn.execute(query)


async def succeeded(store: PostgresStateStore, step: str, batch: str = "b1") -> int:
    state = await store.batch_state(batch)
    return next(s.succeeded for s in state.steps if s.step == step)


async def test_the_kept_tally_counts_while_the_stamp_stands_and_is_read_again_after(
    pool: Any,
) -> None:
    store = PostgresStateStore(pool, STEPS)
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    [first] = await store.record_outcomes([rec("spellcheck", "e1")])
    assert first.verdict is Verdict.RECORDED
    # A write that claims to stamp the batch but does not: the store does not look.
    await unstamped(pool, "DELETE FROM essay_step_outcomes WHERE batch_id = 'b1'")
    await unstamped(
        pool, "UPDATE processing_pipeline_state SET succeeded = 0 WHERE batch_id = 'b1'"
    )
    [again] = await store.record_outcomes([rec("spellcheck", "e1")])
    assert again.verdict is Verdict.DUPLICATE
    # A new stamp (any other writer makes one): the store reads the batch again.
    await execute(
        pool, "UPDATE conductor_batches SET tally_stamp = nextval('conductor_tally_stamps')"
    )
    [reread] = await store.record_outcomes([rec("spellcheck", "e1")])
    assert reread.verdict is Verdict.RECORDED
    assert await succeeded(store, "spellcheck") == 1


async def test_the_metrics_tell_a_kept_tally_used_from_a_batch_read(pool: Any) -> None:
    registry = CollectorRegistry()
    store = PostgresStateStore(pool, STEPS, metrics=ConductorMetrics(registry))
    other = PostgresStateStore(pool, STEPS)

    def counted(result: str) -> float | None:
        return registry.get_sample_value("conductor_kept_tallies_total", {"result": result})

    await store.register_batch(BatchRegistration("b1", ESSAYS))
    await store.record_outcomes([rec("spellcheck", "e1")])
    await store.record_outcomes([rec("spellcheck", "e2")])
    assert (counted("used"), counted("read")) == (2.0, 0.0)
    await other.record_outcomes([rec("spellcheck", "e3")])
    await store.record_outcomes([rec("spellcheck", "e4")])
    assert (counted("used"), counted("read")) == (2.0, 1.0)


async def test_replicas_writing_in_turn_count_each_outcome_once(pool: Any) -> None:
    one, two = PostgresStateStore(pool, STEPS), PostgresStateStore(pool, STEPS)
    await one.register_batch(BatchRegistration("b1", ESSAYS))
    await one.record_outcomes([rec("spellcheck", "e1")])
    [by_two] = await two.record_outcomes([rec("spellcheck", "e2")])
    assert by_two.verdict is Verdict.RECORDED
    verdicts = [
        (await one.record_outcomes([rec("spellcheck", "e2")]))[0].verdict,  # two's, not new
        (await one.record_outcomes([rec("spellcheck", "e3")]))[0].verdict,
        (await two.record_outcomes([rec("spellcheck", "e3")]))[0].verdict,  # one's
        (await two.record_outcomes([rec("spellcheck", "e1", F)]))[0].error is not None,
    ]
    assert verdicts == [Verdict.DUPLICATE, Verdict.RECORDED, Verdict.DUPLICATE, True]
    assert await succeeded(one, "spellcheck") == 3
    [last] = await two.record_outcomes([rec("spellcheck", "e4")])
    assert last.completed_step  # the step completes once, by the fourth essay


async def test_a_write_that_fails_keeps_nothing_it_counted(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PostgresStateStore(pool, STEPS)
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    await store.record_outcomes([rec("spellcheck", "e1")])
    enqueue = outbox.enqueue

    async def failing(conn: Any, events: Any) -> int:
        raise asyncpg.exceptions.ConnectionDoesNotExistError("gone mid-write")

    monkeypatch.setattr(outbox, "enqueue", failing)
    with pytest.raises(Exception, match="gone mid-write"):
        await store.record_outcomes([rec("spellcheck", "e2")])
    monkeypatch.setattr(outbox, "enqueue", enqueue)
    [retried] = await store.record_outcomes([rec("spellcheck", "e2")])
    assert retried.verdict is Verdict.RECORDED  # not the DUPLICATE of the rolled-back count
    assert await succeeded(store, "spellcheck") == 2


async def test_a_re_created_batch_is_never_counted_on_what_was_kept_of_the_old_one(
    pool: Any,
) -> None:
    one, two = PostgresStateStore(pool, STEPS), PostgresStateStore(pool, STEPS)
    await one.register_batch(BatchRegistration("b1", ESSAYS))
    await one.record_outcomes([rec("spellcheck", e) for e in ESSAYS[:2]])
    for table in ("essay_step_outcomes", "conductor_batches"):  # an operator deletes it
        await execute(pool, f"DELETE FROM {table} WHERE batch_id = 'b1'")
    await two.register_batch(BatchRegistration("b1", ESSAYS))
    results = await one.record_outcomes([rec("spellcheck", e) for e in ESSAYS[:2]])
    assert [r.verdict for r in results] == [Verdict.RECORDED, Verdict.RECORDED]
    assert await succeeded(one, "spellcheck") == 2


async def test_concurrent_writes_of_one_batch_in_one_process_count_each_essay_once(
    pool: Any,
) -> None:
    store = PostgresStateStore(pool, STEPS)
    essays = tuple(f"e{n}" for n in range(40))
    await store.register_batch(BatchRegistration("b1", essays))
    chunks = [[rec("spellcheck", e) for e in essays[n : n + 5]] for n in range(0, 40, 5)]
    first = await asyncio.gather(*(store.record_outcomes(chunk) for chunk in chunks))
    again = await asyncio.gather(*(store.record_outcomes(chunk) for chunk in chunks))
    assert [r.verdict for results in first for r in results] == [Verdict.RECORDED] * 40
    assert [r.verdict for results in again for r in results] == [Verdict.DUPLICATE] * 40
    assert sum(r.completed_step for results in first for r in results) == 1
    assert await succeeded(store, "spellcheck") == 40


async def test_without_a_capacity_every_write_reads_the_batch(pool: Any) -> None:
    store = PostgresStateStore(pool, STEPS, kept_essays=0)
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    await store.record_outcomes([rec("spellcheck", "e1")])
    await unstamped(pool, "DELETE FROM essay_step_outcomes WHERE batch_id = 'b1'")
    await unstamped(
        pool, "UPDATE processing_pipeline_state SET succeeded = 0 WHERE batch_id = 'b1'"
    )
    [again] = await store.record_outcomes([rec("spellcheck", "e1")])
    assert again.verdict is Verdict.RECORDED


async def test_writers_that_do_not_stamp_are_stamped_by_the_database(pool: Any) -> None:
    """A conductor of an earlier version (during a rolling update) or an operator's SQL counts
    without stamping: the triggers stamp the batch, and the store reads it again."""
    store = PostgresStateStore(pool, STEPS)
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    await store.record_outcomes([rec("spellcheck", "e1")])
    async with pool.acquire() as conn, conn.transaction():  # what an earlier version writes
        await conn.execute(
            "INSERT INTO essay_step_outcomes (batch_id, essay_id, step, position, outcome)"
            " VALUES ('b1', 'e2', 'spellcheck', 1, 'succeeded')"
        )
        await conn.execute(
            "UPDATE processing_pipeline_state SET succeeded = succeeded + 1"
            " WHERE batch_id = 'b1' AND step = 'spellcheck'"
        )
    results = await store.record_outcomes([rec("spellcheck", "e2"), rec("spellcheck", "e3")])
    assert [r.verdict for r in results] == [Verdict.DUPLICATE, Verdict.RECORDED]
    assert await succeeded(store, "spellcheck") == 3
    await execute(pool, "DELETE FROM essay_step_outcomes WHERE essay_id = 'e3'")  # an operator
    await execute(
        pool,
        "UPDATE processing_pipeline_state SET succeeded = 2 WHERE batch_id = 'b1'"
        " AND step = 'spellcheck'",
    )
    [again] = await store.record_outcomes([rec("spellcheck", "e3")])
    assert again.verdict is Verdict.RECORDED
    assert await succeeded(store, "spellcheck") == 3


@pytest.mark.parametrize(
    "query",
    [
        "TRUNCATE essay_step_outcomes",
        # an outcome moved to another batch: the batch it left is stamped too
        "UPDATE essay_step_outcomes SET batch_id = 'b2' WHERE batch_id = 'b1'",
        "UPDATE processing_pipeline_state SET batch_id = 'b3' WHERE batch_id = 'b1'",
    ],
)
async def test_rows_truncated_or_moved_by_another_hand_make_the_store_read_the_batch(
    pool: Any, query: str
) -> None:
    registry = CollectorRegistry()
    store = PostgresStateStore(pool, STEPS, metrics=ConductorMetrics(registry))
    for batch in ("b1", "b2"):
        await store.register_batch(BatchRegistration(batch, ESSAYS))
    await execute(
        pool,
        "INSERT INTO conductor_batches (batch_id, essay_count, essays_digest) VALUES ('b3', 4, '')",
    )
    await store.record_outcomes([rec("spellcheck", "e1")])
    await execute(pool, query)
    await store.record_outcomes([rec("spellcheck", "e2")])
    read = registry.get_sample_value("conductor_kept_tallies_total", {"result": "read"})
    assert read == 1.0


async def test_another_hand_stamps_a_batch_once_per_transaction(pool: Any) -> None:
    store = PostgresStateStore(pool, STEPS)
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    await store.record_outcomes([rec("spellcheck", e) for e in ESSAYS])
    last = "SELECT last_value FROM conductor_tally_stamps"
    async with pool.acquire() as conn:
        before = await conn.fetchval(last)
        async with conn.transaction():
            await conn.execute("UPDATE essay_step_outcomes SET event_id = 'by-hand'")
            await conn.execute("UPDATE processing_pipeline_state SET eligible = eligible")
        assert await conn.fetchval(last) == before + 1  # four outcomes, four steps: one stamp


class SlowRelease:
    """A pool whose connections go back slowly for the tasks named in ``slow``."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.slow: set[str] = set()

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        async with self._pool.acquire() as conn:
            yield conn
            task = asyncio.current_task()
            if task is not None and task.get_name() in self.slow:
                await asyncio.sleep(0.3)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


async def test_a_write_answers_the_state_it_committed_whatever_the_next_write_does(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first write's connection goes back slowly; meanwhile a second write of the batch
    counts on the kept tally and fails. The first answers its own committed state."""
    slow = SlowRelease(pool)
    store = PostgresStateStore(slow, STEPS)
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    enqueue = outbox.enqueue

    async def failing_for_second(conn: Any, events: Any) -> int:
        task = asyncio.current_task()
        if task is not None and task.get_name() == "second":
            raise asyncpg.exceptions.ConnectionDoesNotExistError("gone mid-write")
        written: int = await enqueue(conn, events)
        return written

    monkeypatch.setattr(outbox, "enqueue", failing_for_second)
    slow.slow.add("first")

    async def second() -> None:
        await asyncio.sleep(0.1)
        with pytest.raises(Exception, match="gone mid-write"):
            await store.record([rec("spellcheck", e) for e in ESSAYS[1:]])

    first = asyncio.create_task(store.record([rec("spellcheck", ESSAYS[0])]), name="first")
    await asyncio.gather(first, asyncio.create_task(second(), name="second"))
    [answered] = [s for s in first.result().states[0].steps if s.step == "spellcheck"]
    assert (answered.succeeded, answered.total) == (1, len(ESSAYS))
    assert await succeeded(store, "spellcheck") == 1


async def test_a_timeout_after_partial_reads_answers_the_batch_in_order(pool: Any) -> None:
    """The store has read some essays of the batch (in the order they were named); a timeout
    reads the whole batch and answers its missing essays in batch order."""
    essays = tuple(f"e{n}" for n in range(8))
    await PostgresStateStore(pool, STEPS).register_batch(BatchRegistration("b1", essays))
    store = PostgresStateStore(pool, STEPS)  # keeps only what it reads
    await store.record_outcomes([rec("nlp", "e7"), rec("spellcheck", "e6"), rec("nlp", "e5")])
    expired = await store.expire("b1", "spellcheck", "", 1)
    assert expired.essay_ids == ("e0", "e1", "e2", "e3", "e4", "e5", "e7")
    reopened = await store.reopen("b1", "run-2", 2, ["spellcheck"])
    assert reopened[0].essay_ids == ("e0", "e1", "e2", "e3", "e4", "e5", "e7")
