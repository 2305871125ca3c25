"""What Kafka holds after a scenario: consumer-group lag, dead letters, completion events.

Read with a group-less consumer and the admin client; groups are named as the mesh names them
(the namespace, a dot, the group).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from google.protobuf.message import DecodeError

from chaos.ledger import Position
from generated.huleedu.events.v1 import events_pb2
from mesh.events.admin import partitions_of, read_topic
from mesh.events.topics import EventKind, dlq_topic, topic_name

Lag = dict[tuple[str, int], int]  # (topic, partition) -> records not yet committed


@dataclass(frozen=True, slots=True)
class DeadLetter:
    dlq: Position  # where the letter is
    original: Position  # the record it stands for
    error: str  # the error's type
    size: int  # the original value's size
    storage: int  # events_pb2.PayloadStorage: where the original value is
    seconds: float  # from the original record's timestamp to the consumer giving it up


async def group_lag(bootstrap: str, groups: Mapping[str, Sequence[str]]) -> dict[str, Lag]:
    """Per group (full name) of ``groups`` (group -> its topics), each partition's lag: its end
    offset less the group's committed offset (0 when nothing was committed)."""
    admin: Any = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer: Any = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        lags: dict[str, Lag] = {}
        for group, topics in groups.items():
            tps = [
                TopicPartition(topic, p)
                for topic in topics
                for p in await partitions_of(bootstrap, topic)
            ]
            ends = await consumer.end_offsets(tps) if tps else {}
            committed = await admin.list_consumer_group_offsets(group)
            lags[group] = {
                (tp.topic, tp.partition): end - (committed[tp].offset if tp in committed else 0)
                for tp, end in ends.items()
            }
        return lags
    finally:
        await consumer.stop()
        await admin.close()


async def groups_of(bootstrap: str) -> list[str]:
    """Every consumer group of the cluster."""
    admin: Any = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(str(group[0]) for group in await admin.list_consumer_groups())
    finally:
        await admin.close()


async def committed_topics(bootstrap: str, group: str) -> set[str]:
    """The topics ``group`` has committed offsets on."""
    admin: Any = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {tp.topic for tp in await admin.list_consumer_group_offsets(group)}
    finally:
        await admin.close()


async def dead_letters(
    bootstrap: str, namespace: str, kinds: Sequence[EventKind] = tuple(EventKind)
) -> list[DeadLetter]:
    """Every dead letter of the dead-letter topics of ``kinds`` (all) of the namespace."""
    letters = []
    for dlq in (dlq_topic(topic_name(kind, namespace)) for kind in kinds):
        for record in await read_topic(bootstrap, dlq):
            envelope = events_pb2.EventEnvelope.FromString(record.value)
            letter = envelope.dead_letter
            letters.append(
                DeadLetter(
                    (record.topic, record.partition, record.offset),
                    (letter.original_topic, letter.partition, letter.offset),
                    letter.error_info.type,
                    letter.payload_size,
                    letter.payload_storage,
                    (letter.failed_at.ToMilliseconds() - letter.timestamp.ToMilliseconds()) / 1000,
                )
            )
    return letters


async def completion_ids(bootstrap: str, namespace: str) -> list[str]:
    """The event id of every record on the namespace's completion topic (repeats included)."""
    topic = topic_name(EventKind.BATCH_STEP_COMPLETED, namespace)
    ids = []
    for record in await read_topic(bootstrap, topic):
        with contextlib.suppress(DecodeError):  # a scenario's poison
            ids.append(events_pb2.EventEnvelope.FromString(record.value).event_id)
    return ids
