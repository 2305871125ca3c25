"""The Redis mirror: key layout and TTL, the monotonic merge, the script cache, outages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from bench.harness.ports import free_port
from conductor_server.domain.counting import StepCount, StepTable
from conductor_server.ports import BatchState
from conductor_server.store.errors import StateBackendUnavailable
from conductor_server.store.redis_mirror import RedisMirror
from tests.support.state_contract import STEPS

TTL = timedelta(hours=1)
TABLE = StepTable(STEPS)


def state(
    spellcheck: int, nlp: int | None, *, version: int = 1, flags: frozenset[str] = frozenset()
) -> BatchState:
    """b1 (4 essays) with ``spellcheck`` essays succeeded, and ``nlp`` once spellcheck is done."""
    counts = {"spellcheck": StepCount(spellcheck, 0, 4), "triage": StepCount(0, 0, 4)}
    if nlp is not None:
        counts["nlp"] = StepCount(nlp, 0, 4)
        counts["cj_assessment"] = StepCount(0, 0, 4)
    return BatchState("b1", 4, flags, TABLE.derive(counts), version)


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[Redis]:
    async with Redis.from_url(redis_url) as client:
        yield client


@pytest.fixture
async def mirror(admin: Redis) -> AsyncIterator[RedisMirror]:
    async with RedisMirror(admin, TABLE, ttl=TTL) as mirror:
        yield mirror


async def test_a_merged_state_reads_back_equal(mirror: RedisMirror) -> None:
    assert await mirror.read("b1") is None
    flagged = state(4, 1, version=2, flags=frozenset({"prompt_attached"}))
    for merged in (state(2, None), flagged):
        await mirror.merge([merged])
        assert await mirror.read("b1") == merged


async def test_a_late_or_repeated_merge_never_goes_back(mirror: RedisMirror) -> None:
    latest = state(4, 3, version=2, flags=frozenset({"prompt_attached"}))
    await mirror.merge([latest])
    await mirror.merge([state(2, None), state(4, 1), latest])  # older states, then a repeat
    assert await mirror.read("b1") == latest


async def test_a_batch_is_one_hash_under_its_hash_tag_that_expires(
    mirror: RedisMirror, admin: Redis
) -> None:
    await mirror.merge([state(4, 1), BatchState("b2", 1, frozenset(), TABLE.derive({}), 1)])
    keys = sorted(k.decode() for k in await admin.keys("*"))
    assert keys == ["batch:{b1}:pipeline_state", "batch:{b2}:pipeline_state"]
    for key in keys:
        assert 0 < await admin.ttl(key) <= TTL.total_seconds(), key


async def test_each_merge_renews_the_ttl(mirror: RedisMirror, admin: Redis) -> None:
    await mirror.merge([state(2, None)])
    for key in await admin.keys("batch:{b1}:*"):
        await admin.expire(key, 100)  # as if most of the TTL had passed
    await mirror.merge([state(2, None)])
    for key in await admin.keys("batch:{b1}:*"):
        assert await admin.ttl(key) > 100, key


async def test_the_script_is_loaded_again_after_redis_forgot_it(
    mirror: RedisMirror, admin: Redis
) -> None:
    await mirror.merge([state(2, None)])
    await admin.script_flush()
    await mirror.merge([state(3, None)])
    merged = await mirror.read("b1")
    assert merged is not None
    assert merged.step("spellcheck").succeeded == 3


async def test_an_unreachable_redis_is_a_transient_error() -> None:
    async with Redis.from_url(f"redis://127.0.0.1:{free_port()}/0") as nowhere:
        mirror = RedisMirror(nowhere, TABLE)
        for call in (mirror.merge([state(1, None)]), mirror.read("b1")):
            with pytest.raises(StateBackendUnavailable) as caught:
                await call
            assert caught.value.retriable
            assert caught.value.backend == "redis"
            assert caught.value.__cause__ is not None
