"""Smoke tests of the real backends: what the product relies on works against these servers.

Kafka: a protobuf event through an idempotent producer and a consumer group with committed
offsets, which survive a broker restart. Redis: Lua through EVALSHA, including NOSCRIPT. PostgreSQL:
transactions commit and roll back, and data survives a crash (kill -9) of the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from google.protobuf.timestamp_pb2 import Timestamp
from redis.exceptions import NoScriptError

from generated.huleedu.events.v1 import events_pb2
from mesh.postgres import pool as postgres
from mesh.runtime import StartupError
from tests.conftest import Backends
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0

# Increment a counter and (re)arm its expiry in one atomic step.
INCR_WITH_TTL = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return value
"""


# --- Kafka ---------------------------------------------------------------------------------------


async def create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, values: Sequence[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"batch-1")
    finally:
        await producer.stop()


def group_consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def consume(consumer: AIOKafkaConsumer, count: int) -> list[ConsumerRecord]:
    """Exactly ``count`` records, polling until the deadline."""
    records: list[ConsumerRecord] = []

    async def got_all() -> bool:
        for batch in (await consumer.getmany(timeout_ms=1000)).values():
            records.extend(batch)
        return len(records) >= count

    await eventually(got_all, DEADLINE_S, what=f"{count} records")
    assert len(records) == count, [r.value for r in records]
    return records


def batch_created_event() -> events_pb2.EventEnvelope:
    return events_pb2.EventEnvelope(
        event_id="evt-1",
        event_type="huleedu.events.v1.BatchCreated",
        event_timestamp=Timestamp(seconds=1_763_900_000, nanos=123_000_000),
        source_service="huleedu-batch-service",
        schema_version=1,
        correlation_id="corr-1",
        metadata={"user_id": "u-1"},
        batch_created=events_pb2.BatchCreated(
            batch_id="batch-1",
            essays=[events_pb2.EssayRef(essay_id="essay-1", text_storage_id="text-1")],
            flags={"prompt_attached": True},
        ),
    )


async def test_protobuf_event_round_trips_through_a_consumer_group(
    kafka_bootstrap: str, kafka_namespace: str
) -> None:
    topic, group = f"{kafka_namespace}.batch-events", f"{kafka_namespace}.conductor"
    await create_topic(kafka_bootstrap, topic)
    event = batch_created_event()
    await produce(kafka_bootstrap, topic, [event.SerializeToString()])

    consumer = group_consumer(kafka_bootstrap, topic, group)
    await consumer.start()
    try:
        (record,) = await consume(consumer, 1)
        received = events_pb2.EventEnvelope.FromString(record.value)
        assert received == event
        assert received.WhichOneof("payload") == "batch_created"
        await consumer.commit()
        assert await consumer.committed(TopicPartition(topic, 0)) == record.offset + 1
    finally:
        await consumer.stop()


async def test_kafka_restart_keeps_topics_and_committed_offsets(
    backends: Backends, kafka_bootstrap: str, kafka_namespace: str
) -> None:
    topic, group = f"{kafka_namespace}.steps", f"{kafka_namespace}.workers"
    await create_topic(kafka_bootstrap, topic)
    await produce(kafka_bootstrap, topic, [b"m0", b"m1", b"m2"])
    consumer = group_consumer(kafka_bootstrap, topic, group)
    await consumer.start()
    try:
        assert [r.value for r in await consume(consumer, 3)] == [b"m0", b"m1", b"m2"]
        await consumer.commit()
    finally:
        await consumer.stop()

    backends.stop("kafka")
    backends.start("kafka")

    assert topic in await list_topics(kafka_bootstrap)
    await produce(kafka_bootstrap, topic, [b"m3"])
    consumer = group_consumer(kafka_bootstrap, topic, group)
    await consumer.start()
    try:
        assert await consumer.committed(TopicPartition(topic, 0)) == 3
        # The group resumes after its committed offset: only the new record arrives.
        assert [r.value for r in await consume(consumer, 1)] == [b"m3"]
    finally:
        await consumer.stop()


# --- Redis ---------------------------------------------------------------------------------------


def redis_client(url: str) -> Any:
    """An asyncio Redis client, typed ``Any``: redis-py's async command stubs return
    ``Awaitable[T] | T`` unions that mypy refuses to await."""
    return aioredis.Redis.from_url(url)


async def test_lua_script_through_evalsha_and_noscript(redis_url: str) -> None:
    client = redis_client(redis_url)
    try:
        sha = await client.script_load(INCR_WITH_TTL)
        assert await client.evalsha(sha, 1, "counter", 5, 60) == 5
        assert await client.evalsha(sha, 1, "counter", 2, 60) == 7
        assert 0 < await client.ttl("counter") <= 60

        await client.script_flush()
        with pytest.raises(NoScriptError):
            await client.evalsha(sha, 1, "counter", 1, 60)
        # Recovery from NOSCRIPT: load again (same SHA1) and retry.
        assert await client.script_load(INCR_WITH_TTL) == sha
        assert await client.evalsha(sha, 1, "counter", 1, 60) == 8

        # redis-py's Script object does that recovery by itself.
        script = client.register_script(INCR_WITH_TTL)
        await client.script_flush()
        assert await script(keys=["counter"], args=[1, 60]) == 9
    finally:
        await client.aclose()


async def test_redis_database_is_flushed_per_test(redis_url: str) -> None:
    client = redis_client(redis_url)
    try:
        assert await client.dbsize() == 0  # the previous test's counter is gone
    finally:
        await client.aclose()


# --- PostgreSQL ----------------------------------------------------------------------------------


async def test_postgres_commit_is_visible_and_rollback_is_not(database_url: str) -> None:
    writer = await asyncpg.connect(database_url)
    reader = await asyncpg.connect(database_url)
    try:
        await writer.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
        async with writer.transaction():
            await writer.execute("INSERT INTO notes VALUES (1, 'kept')")
        rolled_back = writer.transaction()
        await rolled_back.start()
        await writer.execute("INSERT INTO notes VALUES (2, 'dropped')")
        assert await writer.fetchval("SELECT count(*) FROM notes") == 2
        assert await reader.fetchval("SELECT count(*) FROM notes") == 1  # not committed yet
        await rolled_back.rollback()
        rows = await reader.fetch("SELECT id, body FROM notes ORDER BY id")
        assert [tuple(row) for row in rows] == [(1, "kept")]
    finally:
        await writer.close()
        await reader.close()


async def test_postgres_keeps_committed_data_across_kill_9(
    backends: Backends, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE runs (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO runs VALUES (1)")
    finally:
        await conn.close()

    backends.kill("postgres")
    backends.start("postgres")

    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM runs") == 1
    finally:
        await conn.close()


# --- fixtures ------------------------------------------------------------------------------------


def test_a_backend_left_down_by_a_test(backends: Backends) -> None:
    """Leaves Redis killed on purpose: the next test checks the fixtures brought it back."""
    backends.kill("redis")


async def test_is_running_again_for_the_next_test(redis_url: str) -> None:
    client = redis_client(redis_url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_closing_a_pool_with_a_connection_still_out_ends_within_its_bound(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "CLOSE_TIMEOUT", 0.5)
    opened = postgres.postgres_pool(database_url, 2, {})
    pool = await opened.__aenter__()
    leaked = await pool.acquire()  # a path that never gives its connection back
    began = time.monotonic()
    await asyncio.wait_for(opened.__aexit__(None, None, None), 10)  # pool.close() waits forever
    assert time.monotonic() - began < 5
    assert pool.is_closing()
    with pytest.raises(asyncpg.InterfaceError):  # taken from the path that held on to it
        await leaked.fetchval("SELECT 1")


async def test_a_database_belongs_to_the_first_namespace_that_starts_on_it(
    database_url: str,
) -> None:
    migrations = {"mesh": "mesh.postgres.sql"}
    async with postgres.postgres_pool(database_url, 2, migrations, "blue"):
        pass
    async with postgres.postgres_pool(database_url, 2, migrations, "blue"):  # again: fine
        pass
    with pytest.raises(StartupError, match="KAFKA_NAMESPACE='blue', not 'green'"):
        async with postgres.postgres_pool(database_url, 2, migrations, "green"):
            pass
