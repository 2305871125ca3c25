"""Kafka administration: create the registry's topics at start-up, read a topic without a group."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from mesh.events.security import PLAINTEXT, KafkaSecurity

log = logging.getLogger(__name__)


async def create_topics(
    bootstrap_servers: str,
    names: Sequence[str],
    *,
    partitions: int = 3,
    replication_factor: int = 1,
    security: KafkaSecurity = PLAINTEXT,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin: Any = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, **security.client_options()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if missing:
            # a replica starting at the same time may win the race
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name, partitions, replication_factor) for name in missing]
                )
            log.info("created topics %s (%d partitions)", missing, partitions)
        return missing
    finally:
        await admin.close()


async def partitions_of(
    bootstrap_servers: str, topic: str, security: KafkaSecurity = PLAINTEXT
) -> list[int]:
    """The partition numbers of ``topic`` (empty when it does not exist)."""
    admin: Any = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, **security.client_options()
    )
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return (
        sorted(p["partition"] for p in described["partitions"])
        if not described["error_code"]
        else []
    )


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    limit: int | None = None,
    timeout_ms: int = 1_000,
    security: KafkaSecurity = PLAINTEXT,
) -> list[Any]:
    """Every record of ``topic`` from the beginning to its current end, with no consumer group.

    Returns aiokafka ``ConsumerRecord`` objects in (partition, offset) order. A missing topic
    reads as empty.
    """
    found = await partitions_of(bootstrap_servers, topic, security)
    tps = [TopicPartition(topic, p) for p in found]
    if not tps:
        return []
    consumer: Any = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        **security.client_options(),
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while remaining and (limit is None or len(records) < limit):
            batch = await consumer.getmany(*remaining, timeout_ms=timeout_ms)
            for tp, recs in batch.items():
                records.extend(r for r in recs if r.offset < ends[tp])
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        records.sort(key=lambda r: (r.partition, r.offset))
        return records[:limit] if limit is not None else records
    finally:
        await consumer.stop()
