"""A consumer's stop is bounded even when its group's coordinator cannot be reached: the final
commit gives up after ``commit_timeout`` (its records are delivered again) instead of retrying
for as long as aiokafka would."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition

from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope as codec
from mesh.events.bus import Message, OutgoingRecord, Rejection
from mesh.events.consumer import Consumer, ConsumerConfig
from mesh.events.topics import EventKind, topic_name

KIND = EventKind.ESSAY_STEP_OUTCOME
TOPIC = topic_name(KIND, "t")


@dataclasses.dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp: int = 0


class CoordinatorAway:
    """aiokafka's consumer as it is while the group's coordinator cannot be reached: records
    already fetched are returned, and a commit retries without end."""

    def __init__(self, records: list[FakeRecord]) -> None:
        self._batches = [{TopicPartition(TOPIC, 0): records}]
        self.commits = 0
        self.stopped = False

    def subscribe(self, topics: Sequence[str], listener: Any) -> None:
        assert topics == [TOPIC]

    async def start(self) -> None:
        return None

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[FakeRecord]]:
        if self._batches:
            return self._batches.pop()
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, 0)}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits += 1
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.stopped = True


class NoDeadLetters:
    async def write(self, records: Sequence[OutgoingRecord]) -> None:
        raise AssertionError("nothing here is a dead letter")


def outcome(n: int) -> bytes:
    event = codec.build(
        events_pb2.EssayStepOutcome(
            batch_id="b", step="nlp", essay_id=f"e{n}", outcome=events_pb2.STEP_OUTCOME_SUCCEEDED
        ),
        source_service="test",
        event_id=f"event-{n}",
    )
    return codec.encode(event)


async def test_stop_gives_up_a_commit_that_cannot_complete_and_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[str] = []
    all_handled = asyncio.Event()

    async def handler(messages: Sequence[Message]) -> list[Rejection]:
        handled.extend(m.envelope.event_id for m in messages)
        if len(handled) == 3:
            all_handled.set()
        return []

    config = ConsumerConfig(
        "unused:9092",
        group_id="g",
        service="test",
        namespace="t",
        commit_interval_ms=60_000,  # nothing commits before the stop
        commit_timeout=0.5,
        lag_interval=3600,
    )
    kafka = CoordinatorAway([FakeRecord(TOPIC, 0, n, outcome(n)) for n in range(3)])
    consumer = Consumer(config, [KIND], handler, NoDeadLetters(), client=kafka)
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(all_handled.wait(), 5)

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="mesh.events.consumer"):
        await consumer.stop()
        await consumer.close()
    took = time.monotonic() - started

    assert handled == ["event-0", "event-1", "event-2"]
    assert kafka.commits >= 1
    assert kafka.stopped
    assert took < 2.0, f"stop and close took {took:.1f} s with commit_timeout 0.5 s"
    assert task.done()
    assert task.exception() is None
    assert "will be delivered again" in caplog.text
