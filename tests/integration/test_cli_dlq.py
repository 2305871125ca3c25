"""``huleedu dlq``: the operator's list, show and replay of dead letters, on real Kafka."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from clients import cli
from mesh.events import deadletter
from mesh.events.admin import create_topics, read_topic
from mesh.events.retry import PermanentError
from mesh.events.topics import EventKind, dlq_topic, topic_name


@dataclass(frozen=True, slots=True)
class Consumed:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 1_700_000_000_000
    headers: tuple[tuple[str, bytes], ...] = ()


async def _dead_letters_at_offset_0_of_two_partitions(bootstrap: str, topic: str) -> None:
    """Two dead letters, each the first record (offset 0) of its own DLQ partition."""
    await create_topics(bootstrap, [topic, dlq_topic(topic)], partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition in (0, 1):
            record = deadletter.to_record(
                deadletter.Failure(
                    Consumed(topic, partition, 0, f"batch-{partition}".encode(), b"\x00bad"),
                    PermanentError(f"unknown batch batch-{partition}"),
                    attempts=1,
                ),
                consumer_group="g",
                service="test",
                failed_at=datetime.now(UTC),
            )
            await producer.send_and_wait(
                record.topic,
                record.value,
                key=record.key,
                headers=list(record.headers),
                partition=partition,
            )
    finally:
        await producer.stop()


def test_list_show_and_replay_one_dead_letter(
    kafka_bootstrap: str, kafka_namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = topic_name(EventKind.ESSAY_STEP_OUTCOME, kafka_namespace)
    asyncio.run(_dead_letters_at_offset_0_of_two_partitions(kafka_bootstrap, topic))

    def huleedu(*args: str, status: int = 0) -> str:
        argv = ["dlq", *args, topic, "--kafka", kafka_bootstrap, "--json"]
        assert cli.main(argv) == status
        out, err = capsys.readouterr()
        return err if status else out

    listed = [json.loads(line) for line in huleedu("list").splitlines()]
    assert sorted((d["partition"], d["offset"]) for d in listed) == [(0, 0), (1, 0)]

    # offset 0 names a dead letter in each partition: the command refuses to guess
    refused = json.loads(huleedu("replay", "--offset", "0", status=1))
    assert refused == {"error": "offset 0 is in DLQ partitions [0, 1]: pass --partition too"}
    refused = json.loads(huleedu("show", "--partition", "1", "--offset", "7", status=1))
    assert refused["error"].endswith(" at partition 1 offset 7")

    shown = json.loads(huleedu("show", "--partition", "1", "--offset", "0"))
    assert shown["dlq"]["partition"] == 1
    assert shown["envelope"]["deadLetter"]["errorInfo"]["message"] == "unknown batch batch-1"

    assert json.loads(huleedu("replay", "--partition", "1", "--offset", "0")) == {"replayed": 1}
    replayed = asyncio.run(read_topic(kafka_bootstrap, topic))
    assert [(r.key, r.value) for r in replayed] == [(b"batch-1", b"\x00bad")]
    assert dict(replayed[0].headers)["replay.of"] == f"{dlq_topic(topic)}/1/0".encode()
