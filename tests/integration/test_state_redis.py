"""Redis specifics: key layout, TTLs, the script cache, unreachable servers."""

from __future__ import annotations

import logging
import socket
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from conductor_server.domain.model import BatchRegistration
from conductor_server.state import RedisStateStore, StateBackendUnavailable, UnknownBatch
from tests.unit.test_state_contract import ESSAYS, STEPS, rec

TTL = timedelta(hours=1)


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def populated(redis_url: str) -> RedisStateStore:
    """b1 with spellcheck complete (nlp and cj_assessment ready) and one nlp outcome."""
    store = RedisStateStore.from_url(redis_url, STEPS, ttl=TTL)
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    await store.record_outcomes([rec("spellcheck", e) for e in ESSAYS] + [rec("nlp", "e1")])
    return store


async def test_every_key_of_a_batch_shares_its_hash_tag_and_expires(redis_url: str) -> None:
    async with await populated(redis_url) as store, Redis.from_url(redis_url) as admin:
        await store.register_batch(BatchRegistration("b2", ("x",)))
        keys = sorted(k.decode() for k in await admin.keys("*"))
        assert {k.split(":")[1] for k in keys} == {"{b1}", "{b2}"}
        b1 = [k for k in keys if k.startswith("batch:{b1}:")]
        assert {k.removeprefix("batch:{b1}:") for k in b1} >= {
            "meta",
            "essays",
            "graph",
            "pipeline_state",
            "outcomes:spellcheck",
            "outcomes:nlp",
            "expected:nlp",
            "expected:cj_assessment",
        }
        for key in keys:
            assert 0 < await admin.ttl(key) <= TTL.total_seconds(), key


async def test_the_ttl_of_every_key_is_renewed_when_half_has_passed(redis_url: str) -> None:
    async with await populated(redis_url) as store, Redis.from_url(redis_url) as admin:
        keys = await admin.keys("batch:{b1}:*")
        for key in keys:
            await admin.expire(key, 100)  # as if most of the TTL had passed
        await store.record_outcomes([rec("nlp", "e2")])
        for key in keys:
            assert await admin.ttl(key) > TTL.total_seconds() / 2, key


async def test_the_script_is_loaded_again_after_redis_forgot_it(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with await populated(redis_url) as store, Redis.from_url(redis_url) as admin:
        await admin.script_flush()
        [result] = await store.record_outcomes([rec("nlp", "e2")])
        assert result.newly_recorded
        assert "loading it again" in caplog.text
        assert (await store.batch_state("b1")).step("nlp").succeeded == 2


async def test_a_batch_redis_lost_is_unknown(redis_url: str) -> None:
    async with await populated(redis_url) as store, Redis.from_url(redis_url) as admin:
        await admin.flushall()
        [result] = await store.record_outcomes([rec("nlp", "e2")])
        assert isinstance(result.error, UnknownBatch)
        with pytest.raises(UnknownBatch):
            await store.batch_state("b1")


async def test_invalidate_drops_the_whole_batch(redis_url: str) -> None:
    async with await populated(redis_url) as store, Redis.from_url(redis_url) as admin:
        await store.invalidate("b1")
        assert await admin.keys("batch:{b1}:*") == []


async def test_an_unreachable_redis_is_a_transient_error() -> None:
    async with RedisStateStore.from_url(f"redis://127.0.0.1:{free_port()}/0", STEPS) as store:
        for call in (
            store.register_batch(BatchRegistration("b1", ESSAYS)),
            store.record_outcomes([rec("spellcheck", "e1")]),
            store.batch_state("b1"),
        ):
            with pytest.raises(StateBackendUnavailable) as caught:
                await call
            assert caught.value.retriable
            assert caught.value.backend == "redis"
            assert caught.value.__cause__ is not None


async def test_logging_is_quiet_on_the_happy_path(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="conductor_server.state")
    async with await populated(redis_url):
        pass
    assert caplog.records == []
