"""A producer whose idempotence state falls out of step with the broker's (as after a broker
restart that lost it) fails that write, then writes again with a new producer id, instead of
failing every later write to the partition (real Kafka)."""

from __future__ import annotations

import logging

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import OutOfOrderSequenceNumber

from mesh.events.admin import create_topics, read_topic
from mesh.events.bus import OutgoingRecord
from mesh.events.producer import Producer


def record(topic: str, n: int) -> OutgoingRecord:
    return OutgoingRecord(topic, f"value-{n}".encode(), b"key", ())


async def test_a_producer_out_of_step_with_the_broker_starts_again_and_writes(
    kafka_bootstrap: str, kafka_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"{kafka_namespace}.out-of-step"
    await create_topics(kafka_bootstrap, [topic], partitions=1)
    async with Producer(kafka_bootstrap) as producer:
        await producer.write([record(topic, 1)])
        first = producer._kafka
        # The broker now expects the partition's next sequence number; skipping ahead is what a
        # broker that lost the producer's state sees: a gap, OUT_OF_ORDER_SEQUENCE_NUMBER.
        first._txn_manager._sequence_numbers[TopicPartition(topic, 0)] += 5
        with (
            caplog.at_level(logging.WARNING, logger="mesh.events.producer"),
            pytest.raises(OutOfOrderSequenceNumber),
        ):
            await producer.write([record(topic, 2)])
        assert "starting a new producer" in caplog.text
        await producer.write([record(topic, 3)])
        await producer.write([record(topic, 4), record(topic, 5)])
        assert producer._kafka is not first
    values = [r.value for r in await read_topic(kafka_bootstrap, topic)]
    assert values == [b"value-1", b"value-3", b"value-4", b"value-5"]
