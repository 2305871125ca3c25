"""The composed store: PostgreSQL decides, Redis mirrors; Redis lost or down changes no answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bench.harness.ports import free_port
from conductor_server.domain.counting import StepTable
from conductor_server.domain.model import BatchRegistration
from conductor_server.ports import BatchState
from conductor_server.store.composed import ComposedStateStore
from conductor_server.store.errors import StateBackendUnavailable
from conductor_server.store.postgres import PostgresStateStore
from conductor_server.store.redis_mirror import RedisMirror
from tests.conftest import Backends
from tests.support.polling import eventually
from tests.support.state_contract import ESSAYS, STEPS, rec
from tests.support.stores import composed_store, pool_of


@pytest.fixture
async def store(database_url: str, redis_url: str) -> AsyncIterator[ComposedStateStore]:
    async with composed_store(database_url, redis_url) as store:
        yield store


async def redis_view(redis_url: str, batch_id: str = "b1") -> BatchState | None:
    async with Redis.from_url(redis_url) as client, RedisMirror(client, StepTable(STEPS)) as mirror:
        return await mirror.read(batch_id)


async def test_every_write_is_mirrored(store: ComposedStateStore, redis_url: str) -> None:
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    assert await redis_view(redis_url) == await store.batch_state("b1")
    await store.record_outcomes([rec("spellcheck", e) for e in ESSAYS] + [rec("nlp", "e1")])
    mirrored = await redis_view(redis_url)
    assert mirrored is not None
    assert mirrored.step("spellcheck").succeeded == 4
    assert mirrored.step("nlp").succeeded == 1
    assert mirrored.step("nlp").total == 4


async def test_a_flushed_redis_is_rebuilt_on_the_next_read(
    store: ComposedStateStore, redis_url: str
) -> None:
    await store.register_batch(BatchRegistration("b1", ESSAYS, frozenset({"prompt_attached"})))
    await store.record_outcomes([rec("spellcheck", e) for e in ESSAYS] + [rec("nlp", "e1")])
    before = await store.batch_state("b1")
    async with Redis.from_url(redis_url) as admin:
        await admin.flushall()
    assert await store.batch_state("b1") == before
    assert await redis_view(redis_url) == before  # rebuilt in Redis, not only answered


async def test_replaced_flags_reach_redis(store: ComposedStateStore, redis_url: str) -> None:
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    await store.register_batch(BatchRegistration("b1", ESSAYS, frozenset({"prompt_attached"})))
    state = await store.batch_state("b1")
    assert state.flags == {"prompt_attached"}
    assert await redis_view(redis_url) == state


async def test_with_redis_down_writes_count_and_reads_use_postgres(
    database_url: str, redis_url: str
) -> None:
    async with composed_store(database_url, redis_url) as healthy:
        await healthy.register_batch(BatchRegistration("b1", ESSAYS))
    nowhere = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    async with pool_of(database_url) as pool, nowhere:
        degraded = ComposedStateStore(
            PostgresStateStore(pool, STEPS), RedisMirror(nowhere, StepTable(STEPS))
        )
        [result] = await degraded.record_outcomes([rec("spellcheck", "e1")])
        assert result.newly_recorded  # counted, durably, without Redis
        assert (await degraded.batch_state("b1")).step("spellcheck").succeeded == 1
    stale = await redis_view(redis_url)
    assert stale is not None
    assert stale.step("spellcheck").succeeded == 0  # Redis missed the write...
    async with composed_store(database_url, redis_url) as healthy:
        [again] = await healthy.record_outcomes([rec("spellcheck", "e1")])
        assert again.ok
        assert not again.newly_recorded
        caught_up = await redis_view(redis_url)  # ...and the repeat brings it up to date
        assert caught_up is not None
        assert caught_up.step("spellcheck").succeeded == 1


async def test_a_killed_redis_comes_back_empty_and_is_rebuilt(
    backends: Backends, store: ComposedStateStore, redis_url: str
) -> None:
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    await store.record_outcomes([rec("spellcheck", e) for e in ESSAYS[:2]])
    backends.kill("redis")
    [third] = await store.record_outcomes([rec("spellcheck", "e3")])
    assert third.newly_recorded
    assert (await store.batch_state("b1")).step("spellcheck").succeeded == 3  # from PostgreSQL
    backends.start("redis")
    assert (await store.batch_state("b1")).step("spellcheck").succeeded == 3
    results = await store.record_outcomes([rec("spellcheck", e) for e in ESSAYS])
    assert [r.newly_recorded for r in results] == [False, False, False, True]
    assert results[-1].completed_step
    state = await store.batch_state("b1")
    assert state.step("spellcheck").succeeded == 4
    assert await redis_view(redis_url) == state


async def test_with_postgres_down_nothing_is_written_and_reads_stay_hot(
    backends: Backends, store: ComposedStateStore, redis_url: str
) -> None:
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    await store.record_outcomes([rec("spellcheck", "e1")])
    before = await redis_view(redis_url)
    backends.kill("postgres")
    with pytest.raises(StateBackendUnavailable) as caught:
        await store.record_outcomes([rec("spellcheck", "e2")])
    assert caught.value.backend == "postgresql"
    assert await redis_view(redis_url) == before
    assert await store.batch_state("b1") == before


async def test_what_redis_missed_while_down_is_merged_once_a_conductor_sees_it_back(
    database_url: str, redis_url: str
) -> None:
    async with composed_store(database_url, redis_url) as healthy:
        await healthy.register_batch(BatchRegistration("b1", ESSAYS))
        await healthy.register_batch(BatchRegistration("b2", ESSAYS))
    nowhere = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    async with pool_of(database_url) as pool, nowhere:
        degraded = ComposedStateStore(
            PostgresStateStore(pool, STEPS), RedisMirror(nowhere, StepTable(STEPS))
        )
        await degraded.record_outcomes(
            [rec("spellcheck", "e1"), rec("spellcheck", "e2", batch="b2")]
        )
    for batch_id in ("b1", "b2"):  # Redis kept its old image of both batches
        stale = await redis_view(redis_url, batch_id)
        assert stale is not None
        assert stale.step("spellcheck").succeeded == 0
    # A conductor starting with Redis up merges them, without a read or a write of either batch.
    async with composed_store(database_url, redis_url):

        async def caught_up() -> bool:
            views = [await redis_view(redis_url, b) for b in ("b1", "b2")]
            return all(v is not None and v.step("spellcheck").succeeded == 1 for v in views)

        await eventually(caught_up, within=10, what="the backlog merged into Redis")
    async with pool_of(database_url) as pool:
        assert await PostgresStateStore(pool, STEPS).stale(10) == []
