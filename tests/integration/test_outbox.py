"""The transactional outbox against real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope as codec
from mesh.events.admin import create_topics, read_topic
from mesh.events.bus import OutgoingEvent, OutgoingRecord
from mesh.events.producer import Producer
from mesh.events.retry import Backoff
from mesh.events.topics import EventKind, topic_name
from mesh.postgres import outbox
from mesh.postgres.schema import apply_migrations
from tests.support.polling import eventually

KIND = EventKind.BATCH_STEP_COMPLETED
# while the pool finds out its old connections are gone, a query fails: "not yet"
RESTARTING = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def completed(n: int) -> OutgoingEvent:
    payload = events_pb2.BatchStepCompleted(batch_id=f"batch-{n}", step="nlp", total=1)
    return OutgoingEvent(KIND, codec.build(payload, source_service="test", event_id=f"done-{n}"))


async def setup(database_url: str, bootstrap: str, namespace: str) -> tuple[Any, str]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    await apply_migrations(pool, {"mesh": "mesh.postgres.sql"})
    topic = topic_name(KIND, namespace)
    await create_topics(bootstrap, [topic], partitions=1)
    return pool, topic


async def unpublished(pool: Any) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM event_outbox WHERE published_at IS NULL"))


async def unpublished_is(pool: Any, n: int) -> bool:
    return await unpublished(pool) == n


async def listening(pool: Any) -> bool:
    """Whether a connection to the test's (fresh) database is listening: the relay's listener."""
    return bool(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
        )
    )


def failed_passes(caplog: pytest.LogCaptureFixture) -> int:
    """How many passes of the relay have failed so far (each logs one warning)."""
    return sum(
        r.name == outbox.log.name and r.getMessage().startswith("outbox relay failed")
        for r in caplog.records
    )


class CrashAfterPublish:
    """Publishes, then dies before the relay can mark the rows sent."""

    def __init__(self, inner: Producer) -> None:
        self._inner = inner
        self.published = 0

    async def write(self, records: Sequence[OutgoingRecord]) -> None:
        await self._inner.write(records)
        self.published += len(records)
        raise ConnectionResetError("relay killed between publish and mark")


class HangAfterPublish(CrashAfterPublish):
    """Publishes, then hangs until the relay task is cancelled."""

    async def write(self, records: Sequence[OutgoingRecord]) -> None:
        await self._inner.write(records)
        self.published += len(records)
        await asyncio.Event().wait()


async def test_enqueue_is_transactional_and_idempotent(
    database_url: str, kafka_bootstrap: str, kafka_namespace: str
) -> None:
    pool, _ = await setup(database_url, kafka_bootstrap, kafka_namespace)
    try:
        async with pool.acquire() as conn:

            async def state_change_fails() -> None:
                async with conn.transaction():
                    await outbox.enqueue(conn, [completed(1)])
                    raise RuntimeError("the state change failed")

            with pytest.raises(RuntimeError):
                await state_change_fails()
            assert await unpublished(pool) == 0
            async with conn.transaction():
                assert await outbox.enqueue(conn, [completed(n) for n in range(3)]) == 3
            async with conn.transaction():
                assert await outbox.enqueue(conn, [completed(2), completed(3)]) == 1
        row = await pool.fetchrow("SELECT * FROM event_outbox WHERE event_id = 'done-1'")
        assert row["topic_kind"] == KIND.value
        assert row["message_key"] == b"batch-1"
        assert codec.decode(row["payload"]).batch_step_completed.batch_id == "batch-1"
        assert await unpublished(pool) == 4
    finally:
        await pool.close()


async def test_relay_publishes_stored_bytes_and_wakes_on_notify(
    database_url: str, kafka_bootstrap: str, kafka_namespace: str
) -> None:
    pool, topic = await setup(database_url, kafka_bootstrap, kafka_namespace)
    try:
        async with (
            Producer(kafka_bootstrap, namespace=kafka_namespace) as producer,
            outbox.OutboxRelay(
                pool, producer, namespace=kafka_namespace, poll_interval=120
            ) as relay,
        ):
            task = asyncio.create_task(relay.run())
            await eventually(lambda: listening(pool), 5, what="the relay to LISTEN")
            events = [completed(n) for n in range(250)]
            async with pool.acquire() as conn, conn.transaction():
                await outbox.enqueue(conn, events)
            # the poll interval is two minutes: only NOTIFY can wake the relay in time
            await eventually(lambda: unpublished_is(pool, 0), 30, what="every row to be published")
            await relay.stop()
            await task
        records = await read_topic(kafka_bootstrap, topic)
    finally:
        await pool.close()
    assert [r.value for r in records] == [codec.encode(e.envelope) for e in events]
    assert [dict(r.headers)["event_id"] for r in records] == [
        f"done-{n}".encode() for n in range(250)
    ]
    assert records[0].key == b"batch-0"
    assert dict(records[0].headers)["content-type"] == b"application/x-protobuf"


@pytest.mark.parametrize("crash", [CrashAfterPublish, HangAfterPublish])
async def test_a_relay_dying_between_publish_and_mark_publishes_again_with_the_same_id(
    crash: type[CrashAfterPublish], database_url: str, kafka_bootstrap: str, kafka_namespace: str
) -> None:
    pool, topic = await setup(database_url, kafka_bootstrap, kafka_namespace)
    try:
        event = completed(7)
        async with pool.acquire() as conn, conn.transaction():
            await outbox.enqueue(conn, [event])
        async with Producer(kafka_bootstrap, namespace=kafka_namespace) as producer:
            dying = crash(producer)
            relay = outbox.OutboxRelay(pool, dying, namespace=kafka_namespace)
            if crash is CrashAfterPublish:
                with pytest.raises(ConnectionResetError):
                    await relay.relay_once()
            else:
                attempt = asyncio.create_task(relay.relay_once())
                await eventually(lambda: dying.published == 1, 30, what="the publish")
                attempt.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await attempt
            assert dying.published == 1
            assert await unpublished(pool) == 1  # not marked: the transaction never committed

            healthy = outbox.OutboxRelay(pool, producer, namespace=kafka_namespace)
            assert await healthy.relay_once() == 1
            assert await unpublished(pool) == 0
            assert await healthy.relay_once() == 0
        records = await read_topic(kafka_bootstrap, topic)
    finally:
        await pool.close()
    assert len(records) == 2
    assert records[0].value == records[1].value == codec.encode(event.envelope)
    assert {dict(r.headers)["event_id"] for r in records} == {b"done-7"}


async def test_two_relays_share_the_rows_without_publishing_one_twice(
    database_url: str, kafka_bootstrap: str, kafka_namespace: str
) -> None:
    pool, topic = await setup(database_url, kafka_bootstrap, kafka_namespace)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await outbox.enqueue(conn, [completed(n) for n in range(500)])
        async with Producer(kafka_bootstrap, namespace=kafka_namespace) as producer:
            relays = [
                outbox.OutboxRelay(pool, producer, namespace=kafka_namespace, batch_size=20)
                for _ in range(2)
            ]

            async def drain(relay: outbox.OutboxRelay) -> int:
                total = 0
                while n := await relay.relay_once():
                    total += n
                return total

            counts = await asyncio.gather(*(drain(r) for r in relays))
        records = await read_topic(kafka_bootstrap, topic)
    finally:
        await pool.close()
    assert sum(counts) == 500
    assert sorted(dict(r.headers)["event_id"] for r in records) == sorted(
        f"done-{n}".encode() for n in range(500)
    )


async def test_the_relay_carries_on_after_postgresql_restarts(
    backends: Any,
    database_url: str,
    kafka_bootstrap: str,
    kafka_namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # When PostgreSQL goes away the pool takes the LISTEN connection back; the relay used to die
    # there (its next check of that connection raised), leaving every later row unpublished.
    caplog.set_level(logging.WARNING, logger=outbox.log.name)
    pool, topic = await setup(database_url, kafka_bootstrap, kafka_namespace)
    event = completed(1)
    try:
        async with (
            Producer(kafka_bootstrap, namespace=kafka_namespace) as producer,
            outbox.OutboxRelay(
                pool,
                producer,
                namespace=kafka_namespace,
                poll_interval=0.2,
                backoff=Backoff(initial=0.05, cap=0.5),
            ) as relay,
        ):
            task = asyncio.create_task(relay.run())
            await eventually(lambda: listening(pool), 5, what="the relay to LISTEN")
            backends.stop("postgres")
            try:

                async def several_passes_failed() -> bool:
                    assert not task.done(), task
                    return failed_passes(caplog) >= 3

                await eventually(several_passes_failed, 30, what="3 relay passes to fail")
                assert not task.done(), task
            finally:
                backends.start("postgres")

            async def enqueued() -> bool:
                async with pool.acquire() as conn, conn.transaction():
                    await outbox.enqueue(conn, [event])
                return True

            await eventually(
                enqueued, 30, RESTARTING, what="the row to be enqueued after the restart"
            )
            await eventually(
                lambda: unpublished_is(pool, 0),
                30,
                what="the row to be published after the restart",
            )
            assert not task.done()
            await relay.stop()
            await task
        records = await read_topic(kafka_bootstrap, topic)
    finally:
        await pool.close()
    assert [r.value for r in records] == [codec.encode(event.envelope)]


async def test_the_relay_measures_the_backlog_and_counts_what_it_publishes(
    database_url: str, kafka_bootstrap: str, kafka_namespace: str
) -> None:
    from prometheus_client import CollectorRegistry

    pool, _ = await setup(database_url, kafka_bootstrap, kafka_namespace)
    registry = CollectorRegistry()

    def sample(name: str) -> float | None:
        return registry.get_sample_value(name)

    try:
        async with Producer(kafka_bootstrap, namespace=kafka_namespace) as producer:
            relay = outbox.OutboxRelay(
                pool, producer, namespace=kafka_namespace, metrics=outbox.OutboxMetrics(registry)
            )
            async with pool.acquire() as conn, conn.transaction():
                await outbox.enqueue(conn, [completed(n) for n in range(5)])
            await pool.execute("UPDATE event_outbox SET created_at = now() - interval '90 seconds'")
            await relay.measure()
            assert sample("mesh_outbox_backlog_events") == 5
            assert 90 <= (sample("mesh_outbox_oldest_event_age_seconds") or 0) < 120
            assert await relay.relay_once() == 5
            await relay.measure()
            assert sample("mesh_outbox_relayed_events_total") == 5
            assert sample("mesh_outbox_backlog_events") == 0
            assert sample("mesh_outbox_oldest_event_age_seconds") == 0
    finally:
        await pool.close()
