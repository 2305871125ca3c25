"""The composed store: rebuilt after Redis loses data, degraded but exact when a backend is down."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from conductor_server.domain.model import BatchRegistration
from conductor_server.state import (
    BatchState,
    ComposedStateStore,
    PostgresStateStore,
    RedisStateStore,
    StateBackendUnavailable,
)
from tests.conftest import Backends
from tests.integration.test_state_redis import free_port
from tests.unit.test_state_contract import ESSAYS, STEPS, rec


async def composed(database_url: str, redis_url: str) -> ComposedStateStore:
    durable = await PostgresStateStore.connect(database_url, STEPS)
    await durable.migrate()
    return ComposedStateStore(durable, RedisStateStore.from_url(redis_url, STEPS))


@pytest.fixture
async def store(database_url: str, redis_url: str) -> AsyncIterator[ComposedStateStore]:
    async with await composed(database_url, redis_url) as store:
        yield store


async def redis_view(redis_url: str, batch_id: str = "b1") -> BatchState:
    async with RedisStateStore.from_url(redis_url, STEPS) as hot:
        return await hot.batch_state(batch_id)


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
    assert state.registration.flags == {"prompt_attached"}
    assert await redis_view(redis_url) == state


async def test_with_redis_down_writes_fail_retriably_and_reads_use_postgres(
    database_url: str, redis_url: str
) -> None:
    async with await composed(database_url, redis_url) as healthy:
        await healthy.register_batch(BatchRegistration("b1", ESSAYS))
    async with await composed(database_url, f"redis://127.0.0.1:{free_port()}/0") as degraded:
        with pytest.raises(StateBackendUnavailable) as caught:
            await degraded.record_outcomes([rec("spellcheck", "e1")])
        assert caught.value.backend == "redis"
        # Durable all the same, and readable from PostgreSQL.
        assert (await degraded.batch_state("b1")).step("spellcheck").succeeded == 1
    async with await composed(database_url, redis_url) as healthy:
        [retried] = await healthy.record_outcomes([rec("spellcheck", "e1")])
        assert retried.ok
        assert not retried.newly_recorded
        assert (await redis_view(redis_url)).step("spellcheck").succeeded == 1


async def test_a_killed_redis_comes_back_empty_and_is_rebuilt(
    backends: Backends, store: ComposedStateStore, redis_url: str
) -> None:
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    await store.record_outcomes([rec("spellcheck", e) for e in ESSAYS[:2]])
    backends.kill("redis")
    with pytest.raises(StateBackendUnavailable):
        await store.record_outcomes([rec("spellcheck", "e3")])
    assert (await store.batch_state("b1")).step("spellcheck").succeeded == 3  # from PostgreSQL
    backends.start("redis")
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
