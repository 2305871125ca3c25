"""What the Kafka consumer reports beside its throughput: per-partition lag and replays."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from mesh.events.bus import Message, OutgoingRecord
from mesh.events.consumer import Consumer
from mesh.events.deadletter import H_REPLAY_OF
from mesh.events.metrics import ConsumerMetrics
from mesh.events.producer import Producer
from tests.integration.consumer_proc import KIND, config
from tests.integration.test_consumer_kafka import good, setup_topics
from tests.support.polling import eventually


class _NoDeadLetters:
    async def write(self, records: Sequence[OutgoingRecord]) -> None:
        raise AssertionError("nothing here is dead-lettered")


async def test_lag_per_partition_and_replayed_records(
    kafka_bootstrap: str, kafka_namespace: str
) -> None:
    topic = await setup_topics(kafka_bootstrap, kafka_namespace)
    records = [good(n).to_record(kafka_namespace) for n in range(30)]
    replays = [  # as `huleedu dlq replay` writes them
        dataclasses.replace(r, headers=(*r.headers, (H_REPLAY_OF, b"x.dlq/0/1")))
        for r in (good(100 + n).to_record(kafka_namespace) for n in range(4))
    ]
    async with Producer(kafka_bootstrap, namespace=kafka_namespace) as producer:
        await producer.write(records + replays)
    gate = asyncio.Event()

    async def slow(messages: Sequence[Message]) -> None:
        await gate.wait()

    registry = CollectorRegistry()
    group = f"{kafka_namespace}-metrics"
    settings = dataclasses.replace(
        config(kafka_bootstrap, kafka_namespace, group), max_records=1, lag_interval=0.1
    )
    consumer = Consumer(settings, [KIND], slow, _NoDeadLetters(), metrics=ConsumerMetrics(registry))

    def lag() -> float:
        return sum(
            registry.get_sample_value(
                "mesh_consumer_lag", {"group": group, "topic": topic, "partition": str(p)}
            )
            or 0.0
            for p in range(3)
        )

    async with consumer:
        await consumer.start()
        running = asyncio.create_task(consumer.run())
        try:
            # one record in hand, the handler waiting: the rest is lag
            await eventually(lambda: lag() >= len(records + replays) - 3, 30, what="the lag")
            gate.set()
            await eventually(lambda: lag() == 0, 30, what="the lag to go back to 0")
            replayed = registry.get_sample_value(
                "mesh_consumer_replayed_total", {"group": group, "topic": topic}
            )
            assert replayed == len(replays)
        finally:
            await consumer.stop()
            await running
