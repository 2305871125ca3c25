"""The in-memory bus, and through it the dispatcher's semantics shared with the Kafka consumer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope as codec
from mesh.events.bus import (
    BatchHandler,
    EventConsumer,
    EventPublisher,
    Message,
    OutgoingEvent,
    OutgoingRecord,
    RecordWriter,
    Rejection,
)
from mesh.events.memory import MemoryBus, MemoryConsumer
from mesh.events.retry import Backoff, PermanentError, TransientError
from mesh.events.topics import EventKind, dlq_topic, topic_name
from tests.support.polling import eventually

KIND = EventKind.ESSAY_STEP_OUTCOME
TOPIC = topic_name(KIND, "t")
FAST = Backoff(initial=0.01, cap=0.05)


class UnknownBatch(PermanentError):
    pass


def event(n: int, batch: str = "b") -> OutgoingEvent:
    payload = events_pb2.EssayStepOutcome(
        batch_id=batch, step="nlp", essay_id=f"e{n}", outcome=events_pb2.STEP_OUTCOME_SUCCEEDED
    )
    return OutgoingEvent(KIND, codec.build(payload, source_service="test", event_id=f"ev-{n}"))


class Recorder:
    """An idempotent handler: effects keyed by event id; rejects unknown batches."""

    def __init__(self) -> None:
        self.effects: dict[str, int] = {}
        self.deliveries = 0
        self.batches: list[int] = []

    async def __call__(self, messages: Sequence[Message]) -> Iterable[Rejection]:
        self.batches.append(len(messages))
        rejected = []
        for m in messages:
            self.deliveries += 1
            if m.envelope.essay_step_outcome.batch_id == "unknown":
                rejected.append(Rejection(m, UnknownBatch(m.envelope.essay_step_outcome.batch_id)))
                continue
            self.effects[m.event_id] = self.effects.get(m.event_id, 0) + 1
        return rejected


@asynccontextmanager
async def running(consumer: MemoryConsumer) -> AsyncIterator[MemoryConsumer]:
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        await consumer.stop()
        await task


def consumer(
    bus: MemoryBus, handler: BatchHandler, group: str = "g", **kw: object
) -> MemoryConsumer:
    return bus.consumer(group, [KIND], handler, service="svc", backoff=FAST, **kw)  # type: ignore[arg-type]


def test_memory_bus_implements_the_protocols() -> None:
    bus = MemoryBus("t")
    publisher: EventPublisher = bus
    writer: RecordWriter = bus
    sub: EventConsumer = consumer(bus, Recorder())
    assert publisher is bus
    assert writer is bus
    assert isinstance(sub, MemoryConsumer)


async def test_every_event_is_handled_once_and_committed() -> None:
    bus, handler = MemoryBus("t"), Recorder()
    await bus.publish_many([event(n) for n in range(1200)])
    async with running(consumer(bus, handler, max_records=500)):
        await eventually(lambda: len(handler.effects) == 1200, 5)
        await bus.publish(event(5000))
        await eventually(lambda: bus.committed("g", TOPIC) == 1201, 5)
    assert set(handler.effects.values()) == {1}
    assert max(handler.batches) == 500  # batches, not one call per message
    record = bus.records(TOPIC)[0]
    assert record.key == b"b"
    assert dict(record.headers)["event_id"] == b"ev-0"


async def test_poison_goes_to_the_dlq_and_good_events_pass() -> None:
    bus, handler = MemoryBus("t"), Recorder()
    wrong = codec.build(events_pb2.BatchCreated(batch_id="b"), source_service="x")
    poison = [
        OutgoingRecord(TOPIC, b"\xde\xad\xbe\xef", b"k1"),
        OutgoingRecord(TOPIC, codec.encode(wrong), b"k2"),
        event(99, batch="unknown").to_record("t"),
    ]
    await bus.publish_many([event(n) for n in range(10)])
    await bus.write(poison)
    await bus.publish_many([event(n) for n in range(10, 20)])
    async with running(consumer(bus, handler, accept={"essay_step_outcome"})):
        await eventually(lambda: bus.committed("g", TOPIC) == 23, 5)
    assert sorted(handler.effects) == sorted(f"ev-{n}" for n in range(20))
    dead = bus.records(dlq_topic(TOPIC))
    assert [d.key for d in dead] == [b"k1", b"k2", b"unknown"]
    letters = [codec.decode(d.value).dead_letter for d in dead]
    assert [x.payload for x in letters] == [p.value for p in poison]
    assert [x.offset for x in letters] == [10, 11, 12]
    assert [x.error_info.type.rsplit(".", 1)[-1] for x in letters] == [
        "UndecodableEnvelope",
        "UnexpectedPayload",
        "UnknownBatch",
    ]
    assert {x.consumer_group for x in letters} == {"g"}
    assert {x.service for x in letters} == {"svc"}


async def test_a_permanent_raise_for_the_batch_is_isolated_to_the_bad_message() -> None:
    bus = MemoryBus("t")
    seen: list[str] = []

    async def strict(messages: Sequence[Message]) -> None:
        if any(m.envelope.essay_step_outcome.batch_id == "unknown" for m in messages):
            raise UnknownBatch("unknown")
        seen.extend(m.event_id for m in messages)

    await bus.publish_many([event(0), event(1), event(2, "unknown"), event(3)])
    async with running(consumer(bus, strict)):
        await eventually(lambda: bus.committed("g", TOPIC) == 4, 5)
    assert seen == ["ev-0", "ev-1", "ev-3"]
    [dead] = bus.records(dlq_topic(TOPIC))
    assert codec.decode(codec.decode(dead.value).dead_letter.payload).event_id == "ev-2"


async def test_transient_failures_retry_without_dlq_or_commit_past_them() -> None:
    bus, inner = MemoryBus("t"), Recorder()
    failures = 3
    committed_while_failing: list[int] = []

    async def flaky(messages: Sequence[Message]) -> Iterable[Rejection]:
        nonlocal failures
        if failures:
            failures -= 1
            committed_while_failing.append(bus.committed("g", TOPIC))
            raise TransientError("postgres down")
        return await inner(messages)

    await bus.publish_many([event(n) for n in range(5)])
    async with running(consumer(bus, flaky)):
        await eventually(lambda: bus.committed("g", TOPIC) == 5, 5)
    assert committed_while_failing == [0, 0, 0]
    assert set(inner.effects.values()) == {1}
    assert len(inner.effects) == 5
    assert bus.records(dlq_topic(TOPIC)) == []


async def test_an_unknown_exception_is_retried_not_dead_lettered() -> None:
    bus, inner = MemoryBus("t"), Recorder()
    calls = 0

    async def buggy_once(messages: Sequence[Message]) -> Iterable[Rejection]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("bug")
        return await inner(messages)

    await bus.publish(event(1))
    async with running(consumer(bus, buggy_once)):
        await eventually(lambda: bus.committed("g", TOPIC) == 1, 5)
    assert inner.effects == {"ev-1": 1}
    assert bus.records(dlq_topic(TOPIC)) == []


async def test_groups_have_their_own_offsets_and_members_share_one() -> None:
    bus = MemoryBus("t")
    a1, a2, b = Recorder(), Recorder(), Recorder()
    await bus.publish_many([event(n) for n in range(300)])
    async with (
        running(consumer(bus, a1, "a", max_records=7)),
        running(consumer(bus, a2, "a", max_records=7)),
        running(consumer(bus, b, "b")),
    ):
        await eventually(lambda: bus.committed("a", TOPIC) == bus.committed("b", TOPIC) == 300, 5)
    assert len(b.effects) == 300
    assert not set(a1.effects) & set(a2.effects)
    assert len(a1.effects) + len(a2.effects) == 300


async def test_a_restarted_consumer_continues_from_the_commit() -> None:
    bus, first, second = MemoryBus("t"), Recorder(), Recorder()
    await bus.publish_many([event(n) for n in range(10)])
    async with running(consumer(bus, first)):
        await eventually(lambda: bus.committed("g", TOPIC) == 10, 5)
    await bus.publish_many([event(n) for n in range(10, 15)])
    async with running(consumer(bus, second)):
        await eventually(lambda: bus.committed("g", TOPIC) == 15, 5)
    assert sorted(second.effects) == sorted(f"ev-{n}" for n in range(10, 15))
