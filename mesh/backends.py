"""Opening the real backends at start-up: bounded waits, and a clear ``StartupError`` on failure.

Each opener returns an object that owns its connections; the composition root pushes its
``close`` (for a PostgreSQL pool, ``close_pool``) onto its exit stack. Each also has a cheap
``probe`` for the health reporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, cast

import asyncpg
import redis.asyncio as aioredis

from mesh.bus import EventConsumer
from mesh.kafka_admin import create_topics
from mesh.outbox import OutboxRelay
from mesh.producer import Producer
from mesh.runtime import StartupError
from mesh.settings import BackendSettings
from mesh.topics import all_topics

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
POOL_CLOSE_TIMEOUT = 10.0


async def open_postgres(dsn: str, size: int, within: float = CONNECT_TIMEOUT) -> Any:
    """An asyncpg pool; ``StartupError`` when PostgreSQL cannot be reached ``within`` seconds."""
    try:
        pool = await asyncio.wait_for(
            asyncpg.create_pool(dsn, min_size=1, max_size=size, command_timeout=30), within
        )
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise StartupError(f"PostgreSQL unreachable at {_redact(dsn)}: {exc!r}") from exc
    log.info("connected to PostgreSQL at %s (pool %d)", _redact(dsn), size)
    return pool


async def close_pool(pool: Any, within: float = POOL_CLOSE_TIMEOUT) -> None:
    """Close ``pool``; terminate it if a connection is still checked out after ``within`` s.

    asyncpg's ``Pool.close()`` waits for every acquired connection to come back, however long
    that takes (its documentation advises a timeout): a connection some path failed to release
    must not turn a SIGTERM into a hang.
    """
    try:
        await asyncio.wait_for(pool.close(), within)
    except TimeoutError:
        log.warning(
            "PostgreSQL pool still had a connection in use after %.0f s; closing it anyway", within
        )
        pool.terminate()


async def open_redis(url: str, within: float = CONNECT_TIMEOUT) -> aioredis.Redis:
    """A Redis client (connection pool) that answered PING; ``StartupError`` otherwise."""
    client: aioredis.Redis = aioredis.Redis.from_url(
        url, socket_connect_timeout=within, socket_timeout=within, health_check_interval=30
    )
    try:
        await asyncio.wait_for(_ping(client), within)
    except (OSError, TimeoutError, aioredis.RedisError) as exc:
        await client.aclose()
        raise StartupError(f"Redis unreachable at {_redact(url)}: {exc!r}") from exc
    log.info("connected to Redis at %s", _redact(url))
    return client


async def start_within(what: str, start: Callable[[], Awaitable[Any]], within: float) -> None:
    """Run ``start`` (e.g. a Kafka producer's) or fail start-up naming ``what``."""
    try:
        await asyncio.wait_for(start(), within)
    except Exception as exc:
        raise StartupError(f"{what} failed to start: {exc!r}") from exc


def postgres_probe(pool: Any) -> Callable[[], Awaitable[object]]:
    async def probe() -> object:
        async with pool.acquire(timeout=2) as conn:
            return await conn.fetchval("SELECT 1")

    return probe


def redis_probe(client: aioredis.Redis) -> Callable[[], Awaitable[object]]:
    async def probe() -> object:
        return await _ping(client)

    return probe


async def _ping(client: aioredis.Redis) -> object:
    # redis-py types ping() as sync-or-async; on the asyncio client it is a coroutine.
    return await cast(Awaitable[bool], client.ping())


def _redact(url: str) -> str:
    """``url`` without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in credentials else url


async def open_kafka(
    stack: AsyncExitStack, pool: Any, settings: BackendSettings, client_id: str
) -> tuple[Producer, OutboxRelay]:
    """Real mode's Kafka side, the same for both servers: the registry's topics (created when
    missing), a started idempotent producer and the outbox relay over ``pool``; both close
    with ``stack``."""
    b = settings
    await start_within(
        "Kafka topic setup",
        lambda: create_topics(
            b.kafka_bootstrap, all_topics(b.kafka_namespace), partitions=b.kafka_partitions
        ),
        30,
    )
    producer = Producer(b.kafka_bootstrap, namespace=b.kafka_namespace, client_id=client_id)
    await start_within("Kafka producer", producer.start, 30)
    stack.push_async_callback(producer.close)
    relay = OutboxRelay(pool, producer, namespace=b.kafka_namespace)
    stack.push_async_callback(relay.close)
    return producer, relay


async def stop_consumer(consumer: EventConsumer, task: asyncio.Task[None]) -> None:
    """Finish the batch in flight, commit it, leave the group (close when it has one).

    A ``task`` that had already ended is not awaited: ``mesh.runtime.until_stopped`` raised
    its error.
    """
    ended = task.done()
    await consumer.stop()
    if not ended:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    close = getattr(consumer, "close", None)
    if close is not None:
        await close()
