"""The Kafka consumer against a real broker and PostgreSQL: poison, crashes and outages."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry

from generated.huleedu.events.v1 import events_pb2
from mesh.events import deadletter
from mesh.events import envelope as codec
from mesh.events.admin import create_topics, partitions_of, read_topic
from mesh.events.bus import Message, OutgoingEvent, OutgoingRecord, Rejection
from mesh.events.consumer import Consumer
from mesh.events.metrics import ConsumerMetrics
from mesh.events.producer import Producer
from mesh.events.topics import dlq_topic, topic_name
from tests.integration.consumer_proc import KIND, PgRecorder, config, open_pool
from tests.support.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 3


def good(n: int) -> OutgoingEvent:
    payload = events_pb2.EssayStepOutcome(
        batch_id=f"batch-{n % 13}",
        step="spellcheck",
        essay_id=f"essay-{n}",
        outcome=events_pb2.STEP_OUTCOME_SUCCEEDED,
    )
    return OutgoingEvent(KIND, codec.build(payload, source_service="test", event_id=f"good-{n}"))


def poison(n: int, namespace: str) -> OutgoingRecord:
    """Garbage bytes, a payload of the wrong type, or an outcome for an unknown batch."""
    topic = topic_name(KIND, namespace)
    if n % 3 == 0:
        return OutgoingRecord(topic, b"\xff\x00garbage-%d" % n, key=b"batch-x")
    if n % 3 == 1:
        wrong = codec.build(events_pb2.BatchCreated(batch_id=f"b{n}"), source_service="test")
        return OutgoingRecord(topic, codec.encode(wrong), key=b"batch-y")
    unknown = events_pb2.EssayStepOutcome(batch_id=f"unknown-{n}", step="nlp", essay_id="e")
    return OutgoingEvent(KIND, codec.build(unknown, source_service="test")).to_record(namespace)


async def setup_topics(bootstrap: str, namespace: str) -> str:
    topic = topic_name(KIND, namespace)
    await create_topics(bootstrap, [topic, dlq_topic(topic)], partitions=PARTITIONS)
    return topic


async def produce(bootstrap: str, namespace: str, records: list[OutgoingRecord]) -> None:
    async with Producer(bootstrap, namespace=namespace) as producer:
        for start in range(0, len(records), 5_000):
            await producer.write(records[start : start + 5_000])


async def produce_good(bootstrap: str, namespace: str, count: int) -> str:
    """Create the topics and produce ``count`` good records; the topic's name."""
    topic = await setup_topics(bootstrap, namespace)
    await produce(bootstrap, namespace, [good(n).to_record(namespace) for n in range(count)])
    return topic


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin: Any = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer

    consumer: Any = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
        return {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def handled_rows(pool: Any) -> list[Any]:
    return list(await pool.fetch("SELECT event_id, part, record_offset, deliveries FROM handled"))


async def count_handled(pool: Any) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM handled"))


@asynccontextmanager
async def consuming(
    bootstrap: str, namespace: str, group: str, recorder: PgRecorder, registry: CollectorRegistry
) -> AsyncIterator[asyncio.Task[None]]:
    async with (
        Producer(bootstrap, namespace=namespace) as dead_letters,
        Consumer(
            config(bootstrap, namespace, group),
            [KIND],
            recorder,
            dead_letters,
            accept={"essay_step_outcome"},
            metrics=ConsumerMetrics(registry),
        ) as consumer,
    ):
        task = asyncio.create_task(consumer.run())
        try:
            yield task
        finally:
            await consumer.stop()
            await task


async def test_good_events_pass_poison_goes_to_the_dlq_without_stalling(
    kafka_bootstrap: str, kafka_namespace: str, database_url: str
) -> None:
    topic = await setup_topics(kafka_bootstrap, kafka_namespace)
    records, poisoned = [], []
    for n in range(10_000):
        records.append(good(n).to_record(kafka_namespace))
        if n % 97 == 0:
            records.append(poison(n, kafka_namespace))
            poisoned.append(records[-1])
    await produce(kafka_bootstrap, kafka_namespace, records)
    group = f"{kafka_namespace}-g"
    pool = await open_pool(database_url)
    registry = CollectorRegistry()
    try:
        recorder = PgRecorder(pool)
        async with consuming(kafka_bootstrap, kafka_namespace, group, recorder, registry) as task:

            async def all_done() -> bool:
                assert not task.done(), "the consumer stopped"
                return await committed(kafka_bootstrap, group, topic) == await end_offsets(
                    kafka_bootstrap, topic
                )

            await eventually(all_done, 120, what="every record committed")
        rows = await handled_rows(pool)
    finally:
        await pool.close()

    assert sorted(r["event_id"] for r in rows) == sorted(f"good-{n}" for n in range(10_000))
    assert {r["deliveries"] for r in rows} == {1}

    originals = {(r.partition, r.offset): r for r in await read_topic(kafka_bootstrap, topic)}
    dead = await deadletter.list_dead_letters(kafka_bootstrap, topic)
    assert len(dead) == len(poisoned) == 104
    assert sorted(d.letter.payload for d in dead) == sorted(p.value for p in poisoned)
    types = set()
    for d in dead:
        letter, headers = d.letter, dict(d.headers)
        original = originals[(letter.partition, letter.offset)]
        assert letter.payload == original.value  # byte for byte
        assert letter.key == original.key
        assert letter.original_topic == topic
        assert letter.timestamp.ToMilliseconds() == original.timestamp
        assert letter.schema_version == 1
        assert letter.error_info.type
        assert letter.error_info.message
        assert letter.error_info.traceback.strip().endswith(letter.error_info.message)
        assert letter.consumer_group == group
        assert letter.service == "consumer-proc"
        assert letter.attempts == 1
        assert letter.failed_at.seconds > 0
        assert d.envelope.event_type == "huleedu.events.v1.DeadLetter"
        assert headers["dlq.original_topic"] == topic.encode()
        assert headers["dlq.original_partition"] == str(letter.partition).encode()
        assert headers["dlq.original_offset"] == str(letter.offset).encode()
        assert headers["dlq.error_type"] == letter.error_info.type.encode()
        assert headers["dlq.consumer_group"] == group.encode()
        types.add(letter.error_info.type.rsplit(".", 1)[-1])
    assert types == {"UndecodableEnvelope", "UnexpectedPayload", "UnknownBatch"}
    assert registry.get_sample_value(
        "mesh_consumer_handled_total", {"group": group, "topic": topic}
    ) == pytest.approx(10_000, abs=0)

    # operations: show one as JSON, replay all to the original topic
    assert '"deadLetter"' in deadletter.show(dead[0])
    async with Producer(kafka_bootstrap) as producer:
        assert await deadletter.replay(producer, dead) == len(dead)
    replayed = [r for r in await read_topic(kafka_bootstrap, topic) if r.offset >= 0]
    marks = [r for r in replayed if "replay.of" in dict(r.headers)]
    assert sorted(r.value for r in marks) == sorted(p.value for p in poisoned)
    assert sorted(r.key or b"" for r in marks) == sorted(p.key or b"" for p in poisoned)


def spawn(bootstrap: str, database_url: str, namespace: str, group: str) -> Any:
    return asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.consumer_proc",
        bootstrap,
        database_url,
        namespace,
        group,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )


async def test_a_consumer_killed_mid_stream_loses_nothing_after_restart(
    kafka_bootstrap: str, kafka_namespace: str, database_url: str
) -> None:
    total = 30_000
    topic = await produce_good(kafka_bootstrap, kafka_namespace, total)
    group = f"{kafka_namespace}-g"
    pool = await open_pool(database_url)
    try:
        first = await spawn(kafka_bootstrap, database_url, kafka_namespace, group)
        try:
            await eventually(lambda: count_handled_at_least(pool, 3_000), 120, what="3000 handled")
        finally:
            first.send_signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
        assert await count_handled(pool) < total, "the kill came too late to prove anything"

        second = await spawn(kafka_bootstrap, database_url, kafka_namespace, group)
        try:
            await eventually(lambda: count_handled_at_least(pool, total), 180, what="all handled")
            await eventually(
                lambda: committed_to_end(kafka_bootstrap, group, topic),
                60,
                what="commit to the end",
            )
        finally:
            second.send_signal(signal.SIGTERM)
            assert await second.wait() == 0  # a graceful stop
        rows = await handled_rows(pool)
    finally:
        await pool.close()
    assert sorted(r["event_id"] for r in rows) == sorted(f"good-{n}" for n in range(total))
    assert await deadletter.list_dead_letters(kafka_bootstrap, topic) == []


async def count_handled_at_least(pool: Any, n: int) -> bool:
    return await count_handled(pool) >= n


async def committed_to_end(bootstrap: str, group: str, topic: str) -> bool:
    return await committed(bootstrap, group, topic) == await end_offsets(bootstrap, topic)


async def test_a_broker_outage_pauses_consumption_and_sends_nothing_to_the_dlq(
    backends: Any, kafka_bootstrap: str, kafka_namespace: str, database_url: str
) -> None:
    topic = await produce_good(kafka_bootstrap, kafka_namespace, 8_000)
    group = f"{kafka_namespace}-g"
    pool = await open_pool(database_url)
    registry = CollectorRegistry()
    try:
        recorder = PgRecorder(pool)
        async with consuming(kafka_bootstrap, kafka_namespace, group, recorder, registry) as task:
            await eventually(
                lambda: count_handled_at_least(pool, 1), 60, what="consumption under way"
            )
            backends.stop("kafka")
            await asyncio.sleep(10)  # the scenario: a ten-second outage
            assert not task.done(), "the consumer gave up during the outage"
            backends.start("kafka")
            await produce(
                kafka_bootstrap,
                kafka_namespace,
                [good(n).to_record(kafka_namespace) for n in range(8_000, 10_000)],
            )
            await eventually(lambda: count_handled_at_least(pool, 10_000), 180, what="all handled")
            await eventually(
                lambda: committed_to_end(kafka_bootstrap, group, topic),
                60,
                what="commit to the end",
            )
            assert not task.done()
        rows = await handled_rows(pool)
    finally:
        await pool.close()
    assert sorted(r["event_id"] for r in rows) == sorted(f"good-{n}" for n in range(10_000))
    assert await deadletter.list_dead_letters(kafka_bootstrap, topic) == []


class HeldAfterFirstBatch(PgRecorder):
    """Holds every batch after the first until ``outage`` is set: the outage then always finds
    work in hand (the consumer can otherwise handle all its records before PostgreSQL stops)."""

    def __init__(self, pool: Any) -> None:
        super().__init__(pool)
        self.outage = asyncio.Event()
        self._batches = 0

    async def __call__(self, messages: Sequence[Message]) -> list[Rejection]:
        self._batches += 1
        if self._batches > 1:
            await self.outage.wait()
        return await super().__call__(messages)


async def test_a_postgres_outage_is_retried_without_dlq_or_commit_past_it(
    backends: Any, kafka_bootstrap: str, kafka_namespace: str, database_url: str
) -> None:
    total = 6_000
    topic = await produce_good(kafka_bootstrap, kafka_namespace, total)
    group = f"{kafka_namespace}-g"
    pool = await open_pool(database_url)
    registry = CollectorRegistry()
    retries = {"group": group, "topic": topic}
    try:
        recorder = HeldAfterFirstBatch(pool)
        async with consuming(kafka_bootstrap, kafka_namespace, group, recorder, registry) as task:
            await eventually(
                lambda: count_handled_at_least(pool, 1), 60, what="consumption under way"
            )
            backends.stop("postgres")
            recorder.outage.set()
            try:

                async def retried_a_few_times() -> bool:
                    # never a commit past what is durable in PostgreSQL
                    # (read the commit first: the handler's write always precedes its commit)
                    commits = await committed(kafka_bootstrap, group, topic)
                    durable = set(recorder.durable)
                    for part, offset in commits.items():
                        missing = [o for o in range(offset) if (topic, part, o) not in durable]
                        assert not missing, (
                            f"committed {part}@{offset} past unhandled {missing[:3]}; durable: "
                            f"{sorted(o for t, p, o in durable if p == part)[:5]} of {len(durable)}"
                        )
                    count = registry.get_sample_value("mesh_consumer_retries_total", retries)
                    return (count or 0) >= 3

                await eventually(retried_a_few_times, 60, what="transient retries")
                assert len(recorder.durable) < total
                assert not task.done()
            finally:
                backends.start("postgres")
            await eventually(lambda: count_handled_at_least(pool, total), 120, what="all handled")
            await eventually(
                lambda: committed_to_end(kafka_bootstrap, group, topic),
                60,
                what="commit to the end",
            )
        rows = await handled_rows(pool)
    finally:
        await pool.close()
    assert len(rows) == total
    assert await deadletter.list_dead_letters(kafka_bootstrap, topic) == []


async def test_graceful_stop_commits_what_was_handled_and_a_restart_goes_on(
    kafka_bootstrap: str, kafka_namespace: str, database_url: str
) -> None:
    total = 20_000
    topic = await produce_good(kafka_bootstrap, kafka_namespace, total)
    group = f"{kafka_namespace}-g"
    pool = await open_pool(database_url)
    try:
        recorder = PgRecorder(pool)
        async with consuming(
            kafka_bootstrap, kafka_namespace, group, recorder, CollectorRegistry()
        ):
            await eventually(lambda: count_handled_at_least(pool, 2_000), 60, what="2000 handled")
        after_stop = await count_handled(pool)
        assert sum((await committed(kafka_bootstrap, group, topic)).values()) == after_stop
        async with consuming(
            kafka_bootstrap, kafka_namespace, group, recorder, CollectorRegistry()
        ):
            await eventually(lambda: count_handled_at_least(pool, total), 120, what="all handled")
            await eventually(
                lambda: committed_to_end(kafka_bootstrap, group, topic),
                60,
                what="commit to the end",
            )
        rows = await handled_rows(pool)
    finally:
        await pool.close()
    assert len(rows) == total
    assert {r["deliveries"] for r in rows} == {1}  # nothing was redelivered


async def test_a_second_member_takes_over_partitions_without_losing_any(
    kafka_bootstrap: str, kafka_namespace: str, database_url: str
) -> None:
    topic = await setup_topics(kafka_bootstrap, kafka_namespace)
    produced = 5_000
    await produce(
        kafka_bootstrap,
        kafka_namespace,
        [good(n).to_record(kafka_namespace) for n in range(produced)],
    )
    group = f"{kafka_namespace}-g"
    pool = await open_pool(database_url)
    try:
        first, second = PgRecorder(pool), PgRecorder(pool)
        async with consuming(kafka_bootstrap, kafka_namespace, group, first, CollectorRegistry()):
            await eventually(lambda: count_handled_at_least(pool, 1_000), 60, what="1000 handled")
            async with consuming(
                kafka_bootstrap, kafka_namespace, group, second, CollectorRegistry()
            ):

                async def second_handles_some() -> bool:
                    # keep producing until the rebalance hands the second member a partition
                    nonlocal produced
                    if second.durable:
                        return True
                    chunk = [
                        good(n).to_record(kafka_namespace) for n in range(produced, produced + 300)
                    ]
                    await produce(kafka_bootstrap, kafka_namespace, chunk)
                    produced += 300
                    return False

                await eventually(second_handles_some, 60, what="the second member's partition")
                await eventually(
                    lambda: count_handled_at_least(pool, produced), 120, what="all handled"
                )
                await eventually(
                    lambda: committed_to_end(kafka_bootstrap, group, topic),
                    60,
                    what="commit to end",
                )
        rows = await handled_rows(pool)
    finally:
        await pool.close()
    assert sorted(r["event_id"] for r in rows) == sorted(f"good-{n}" for n in range(produced))
    assert first.durable


async def test_commits_wait_for_the_interval_and_stop_commits_the_rest(
    kafka_bootstrap: str, kafka_namespace: str
) -> None:
    """At most one commit per interval while running; stopping commits everything handled."""
    total = 3_000
    topic = await produce_good(kafka_bootstrap, kafka_namespace, total)
    group = f"{kafka_namespace}-interval"
    handled = 0

    async def slow_handler(messages: Any) -> None:
        nonlocal handled
        await asyncio.sleep(0.05)  # so several batches finish inside the interval
        handled += len(messages)

    settings = dataclasses.replace(
        config(kafka_bootstrap, kafka_namespace, group), max_records=250, commit_interval_ms=60_000
    )
    async with (
        Producer(kafka_bootstrap, namespace=kafka_namespace) as dead_letters,
        Consumer(settings, [KIND], slow_handler, dead_letters) as consumer,
    ):
        task = asyncio.create_task(consumer.run())
        await eventually(lambda: handled >= total, 60, what="every record handled")
        # the first batch was committed at once; the rest waits for the (long) interval
        running = sum((await committed(kafka_bootstrap, group, topic)).values())
        assert 0 < running < total
        await consumer.stop()
        await task
    assert await committed_to_end(kafka_bootstrap, group, topic)


async def test_a_backlog_on_one_partition_is_not_held_up_by_fetches_of_the_empty_ones(
    kafka_bootstrap: str, kafka_namespace: str
) -> None:
    """Every record on one partition, the other two empty, a handler slow enough that a fetched
    megabyte takes it longer than aiokafka's prefetch backoff (100 ms): aiokafka then fetches
    the empty partitions alone, and the partition with the backlog cannot be fetched again
    until that fetch returns. The wait between two polls stays well below the 500 ms that
    aiokafka's default ``fetch_max_wait_ms`` lets that fetch wait at the broker."""
    total = 12_000
    topic = await setup_topics(kafka_bootstrap, kafka_namespace)
    padding = "c" * 200  # about 330 bytes a record: a megabyte is some 3,000 records
    records = []
    for n in range(total):
        payload = events_pb2.EssayStepOutcome(
            batch_id="one-batch",
            step="spellcheck",
            essay_id=f"essay-{n}",
            outcome=events_pb2.STEP_OUTCOME_SUCCEEDED,
            output_storage_id=f"{padding}-{n}",
        )
        built = codec.build(payload, source_service="test", event_id=f"backlog-{n}")
        records.append(OutgoingEvent(KIND, built, key="one-batch").to_record(kafka_namespace))
    await produce(kafka_bootstrap, kafka_namespace, records)
    ends = await end_offsets(kafka_bootstrap, topic)
    assert sorted(ends.values()) == [0, 0, total]  # one partition holds the backlog

    polls: list[tuple[float, float, int]] = []  # (began, ended, records) of each poll

    async def slow_handler(messages: Sequence[Message]) -> list[Rejection]:
        began = time.monotonic()
        await asyncio.sleep(0.03)  # 500 records a poll: a megabyte takes about 200 ms
        polls.append((began, time.monotonic(), len(messages)))
        return []

    settings = config(kafka_bootstrap, kafka_namespace, f"{kafka_namespace}-backlog")
    async with (
        Producer(kafka_bootstrap, namespace=kafka_namespace) as dead_letters,
        Consumer(settings, [KIND], slow_handler, dead_letters) as consumer,
    ):
        task = asyncio.create_task(consumer.run())
        await eventually(
            lambda: sum(n for _, _, n in polls) >= total, 60, what="every record handled"
        )
        await consumer.stop()
        await task
    assert sum(n for _, _, n in polls) == total
    waits = [later[0] - earlier[1] for earlier, later in itertools.pairwise(polls)]
    assert max(waits) < 0.25, sorted(waits)[-5:]
