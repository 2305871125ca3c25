"""A poison record the broker accepts but whose dead letter would not fit: the partition moves on,
the letter carries the facts, and the original value is kept in PostgreSQL, where ``huleedu dlq``
shows and replays it (real Kafka, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from clients import cli
from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope
from mesh.events.admin import read_topic
from mesh.events.bus import Message
from mesh.events.kafka import KafkaBus, KafkaConfig
from mesh.events.topics import EventKind, dlq_topic, topic_name
from mesh.postgres.pool import postgres_pool
from mesh.postgres.vault import PostgresPayloadVault
from tests.support.polling import eventually

# Just under the broker's default limit (message.max.bytes 1,048,588): Kafka accepts it, and the
# dead letter that wraps it (error, traceback, headers) does not fit.
POISON_BYTES = 1_047_400


async def test_an_oversized_poison_leaves_its_partition_and_stays_replayable(
    kafka_bootstrap: str,
    kafka_namespace: str,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = topic_name(EventKind.ESSAY_STEP_OUTCOME, kafka_namespace)
    handled: list[str] = []

    async def handler(messages: Sequence[Message]) -> None:
        handled.extend(m.event_id for m in messages)

    config = KafkaConfig(kafka_bootstrap, namespace=kafka_namespace, partitions=1)
    migrations = {"mesh": "mesh.postgres.sql"}
    async with (
        KafkaBus(config, CollectorRegistry()) as bus,
        postgres_pool(database_url, 2, migrations) as pool,
    ):
        poison = b"\xff" * POISON_BYTES  # not an envelope: a permanent failure
        good = envelope.build(
            events_pb2.EssayStepOutcome(batch_id="b", step="s", essay_id="e"),
            source_service="test",
            event_id="after-the-poison",
        )
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=2**21)
        await producer.start()
        try:
            await producer.send_and_wait(topic, poison, key=b"b")
            await producer.send_and_wait(topic, envelope.encode(good), key=b"b")
        finally:
            await producer.stop()

        consumer = bus.consumer(
            "g",
            [EventKind.ESSAY_STEP_OUTCOME],
            handler,
            service="test",
            accept={"essay_step_outcome"},
            vault=PostgresPayloadVault(pool),
        )
        async with consumer:
            task = asyncio.create_task(consumer.run())
            try:
                await eventually(
                    lambda: handled == ["after-the-poison"], 60, what="the next record"
                )
            finally:
                await consumer.stop()
                await task

        [letter_record] = await read_topic(kafka_bootstrap, dlq_topic(topic))
        letter = envelope.decode(letter_record.value, accept={"dead_letter"}).dead_letter
        assert (letter.payload, letter.payload_size) == (b"", POISON_BYTES)
        assert letter.payload_sha256 == hashlib.sha256(poison).hexdigest()
        assert letter.payload_storage == events_pb2.PAYLOAD_STORAGE_POSTGRESQL
        assert "UndecodableEnvelope" in letter.error_info.type

    async def huleedu(*args: str) -> str:  # the CLI runs its own event loop: in a thread
        command = ["dlq", *args, topic, "--kafka", kafka_bootstrap, "--database", database_url]
        command.append("--json")
        assert await asyncio.to_thread(cli.main, command) == 0
        return capsys.readouterr().out

    [listed] = [json.loads(line) for line in (await huleedu("list")).splitlines()]
    assert listed["error"].endswith("UndecodableEnvelope")
    shown = json.loads(await huleedu("show"))
    assert shown["envelope"]["deadLetter"]["payloadSize"] == str(POISON_BYTES)
    assert json.loads(await huleedu("replay")) == {"replayed": 1}
    records = await read_topic(kafka_bootstrap, topic)
    assert records[-1].value == poison  # the original bytes, back on their topic
