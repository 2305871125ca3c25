"""What the benchmark reads from Kafka, and the floor it measures on it.

``Observer`` reads the outcome, completion and command topics of a namespace without a consumer
group, between timed runs (paused while one is timed), and turns a batch's records into a
``Timeline`` of Kafka record timestamps (CreateTime: set by the producer when it takes the
record). ``floor`` measures the two-hop round trip over the mesh's own bus; ``Burst`` how long
a step's outcomes take to reach a consumer that does nothing else with them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.harness.processes import PARTITIONS, START_TIMEOUT, Process, spawn, stop, wait_workers
from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope
from mesh.events.admin import create_topics
from mesh.events.bus import Message, OutgoingRecord, Record
from mesh.events.consumer import Consumer
from mesh.events.kafka import KafkaBus, KafkaConfig
from mesh.events.topics import COMMAND_KINDS, EventKind, all_topics, topic_name

FLOOR_KINDS = (EventKind.BATCH_CREATED, EventKind.PHASE_SKIPPED)  # the floor's topics A and B
CREATE_TIME = 0  # a record's timestamp_type when the producer set its timestamp


def transition_name(step: str, needs: Sequence[str]) -> str:
    return f"{'+'.join(needs)} -> {step}"


@dataclass(frozen=True, slots=True)
class Transition:
    """One transition (ms) in two shares: the conductor's, from the dependencies' last outcome to
    the last of their BatchStepCompleted, and the BatchService's, from that to the command."""

    conductor: int
    batch: int

    @property
    def total(self) -> int:
        return self.conductor + self.batch


@dataclass
class Timeline:
    """Per (payload, step) of one batch: the last outcome's, the completion's and the first
    command's Kafka timestamp (ms)."""

    seen: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, record: Record) -> None:
        event = envelope.decode(record.value)
        payload = envelope.payload_field(event)
        key, stamp = (payload, getattr(event, payload).step), record.timestamp
        pick = max if payload == "essay_step_outcome" else min
        self.seen[key] = pick(self.seen.get(key, stamp), stamp)

    def transition(self, step: str, needs: Sequence[str]) -> Transition:
        outcome = max(self.seen["essay_step_outcome", need] for need in needs)
        completed = max(self.seen["batch_step_completed", need] for need in needs)
        return Transition(completed - outcome, self.seen["step_command", step] - completed)

    def transitions(self, deps: Mapping[str, Sequence[str]]) -> dict[str, Transition]:
        """Every step of ``deps`` that has dependencies, by ``transition_name``."""
        return {
            transition_name(step, needs): self.transition(step, needs)
            for step, needs in deps.items()
            if needs
        }


class Observer:
    """Reads the outcome, completion and command topics of a namespace without a group."""

    def __init__(self, bootstrap: str, namespace: str) -> None:
        kinds = [
            EventKind.ESSAY_STEP_OUTCOME,
            EventKind.BATCH_STEP_COMPLETED,
            *dict.fromkeys(COMMAND_KINDS.values()),
        ]
        self._tps = [
            TopicPartition(topic_name(kind, namespace), p)
            for kind in kinds
            for p in range(PARTITIONS)
        ]
        self._kafka: Any = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )

    async def __aenter__(self) -> Observer:
        await self._kafka.start()
        self._kafka.assign(self._tps)
        await self._kafka.seek_to_end(*self._tps)
        self._kafka.pause(*self._tps)  # no fetching while a run is timed
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._kafka.stop()

    async def read(self, batch_id: str) -> Timeline:
        """The records of ``batch_id`` among those written since the last read."""
        kafka, key, timeline = self._kafka, batch_id.encode(), Timeline()
        ends = await kafka.end_offsets(self._tps)
        kafka.resume(*self._tps)
        try:
            while [tp for tp in self._tps if await kafka.position(tp) < ends[tp]]:
                polled = await kafka.getmany(timeout_ms=1000, max_records=10_000)
                for records in polled.values():
                    for record in records:
                        if record.timestamp_type != CREATE_TIME:
                            raise RuntimeError(f"{record.topic}: not CreateTime timestamps")
                        if record.key == key:
                            timeline.add(record)
        finally:
            kafka.pause(*self._tps)
        return timeline


class Floor:
    """Two hops over the mesh's bus: write to A, a consumer on A writes to B, B receives."""

    def __init__(self, bus: KafkaBus) -> None:
        self._bus = bus
        self._a, self._b = (topic_name(kind, bus.namespace) for kind in FLOOR_KINDS)
        self._arrivals: dict[str, asyncio.Future[float]] = {}
        self._sent = 0

    async def relay(self, messages: Sequence[Message]) -> None:
        """The handler of A's consumer: write each record to B as it came."""
        records = [(m.record.value or b"", m.record.key, m.record.headers) for m in messages]
        await self._bus.write([OutgoingRecord(self._b, *record) for record in records])

    async def arrive(self, messages: Sequence[Message]) -> None:
        """The handler of B's consumer: note when each trip arrived."""
        now = time.perf_counter()
        for message in messages:
            arrival = self._arrivals.get(message.envelope.batch_created.batch_id)
            if arrival is not None and not arrival.done():
                arrival.set_result(now)

    async def trip(self, within: float = 10.0) -> float:
        """Seconds from the write of a new record on A to its receipt on B."""
        self._sent += 1
        trip = f"trip-{self._sent}"
        event = envelope.build(
            events_pb2.BatchCreated(batch_id=trip), source_service="bench-floor", event_id=trip
        )
        headers = tuple(envelope.headers(event))
        record = OutgoingRecord(self._a, envelope.encode(event), trip.encode(), headers)
        arrival = self._arrivals[trip] = asyncio.get_running_loop().create_future()
        try:
            began = time.perf_counter()
            await self._bus.write([record])
            received: float = await asyncio.wait_for(arrival, within)
            return received - began
        finally:
            del self._arrivals[trip]

    async def trips(self, count: int) -> list[float]:
        """``count`` trips, one after another."""
        return [await self.trip() for _ in range(count)]


async def _finish(consumer: Consumer, task: asyncio.Task[None]) -> None:
    await consumer.stop()
    await task


@asynccontextmanager
async def floor(bootstrap: str, namespace: str, joined_within: float) -> AsyncIterator[Floor]:
    """The floor's bus (its topics: the registry's, under ``<namespace>.floor``) and its two
    consumers, joined and warmed up."""
    space = f"{namespace}.floor"
    topics = [topic_name(kind, space) for kind in FLOOR_KINDS]
    await create_topics(bootstrap, topics, partitions=PARTITIONS)
    async with AsyncExitStack() as stack:
        config = KafkaConfig(bootstrap, namespace=space, client_id="bench-floor")
        bus = await stack.enter_async_context(KafkaBus(config))
        probe = Floor(bus)
        for kind, handler in zip(FLOOR_KINDS, (probe.relay, probe.arrive), strict=True):
            group = f"{space}.{kind.name.lower()}"
            consumer = bus.consumer(group, [kind], handler, service="bench-floor")
            await stack.enter_async_context(consumer)
            stack.push_async_callback(_finish, consumer, asyncio.create_task(consumer.run()))
        await probe.trip(within=joined_within)  # both consumers have joined their groups
        await probe.trips(20)  # warm-up
        yield probe


class Burst:
    """A step's outcomes in one hop: a ``StepCommand`` of N essays to a demo worker process, its
    N outcomes received by a consumer in this process (``arrive``) that only notes them.

    The worker writes a command's outcomes as a step's worker does in a run (one write, keyed by
    the batch); ``delivery`` answers the time (ms) from the last outcome's Kafka timestamp to the
    receipt of the last of them: the part of a transition at N essays that is Kafka's, with the
    worker process, the broker and the consumer runner, and no counting."""

    def __init__(self, bus: KafkaBus) -> None:
        self._bus = bus
        self._commands = topic_name(COMMAND_KINDS["spellcheck"], bus.namespace)
        self._waiting: dict[str, tuple[int, list[int], asyncio.Future[float]]] = {}
        self._sent = 0

    async def arrive(self, messages: Sequence[Message]) -> None:
        """The handler of the outcome topic's consumer: note each outcome of a burst."""
        now = time.time()
        for message in messages:
            waiting = self._waiting.get(message.envelope.essay_step_outcome.batch_id)
            if waiting is None:
                continue
            expected, stamps, done = waiting
            stamps.append(message.record.timestamp)
            if len(stamps) == expected and not done.done():
                done.set_result(now * 1000 - max(stamps))

    async def delivery(self, essays: int, within: float = 60.0) -> float:
        """One burst of ``essays`` outcomes (ms, as above)."""
        self._sent += 1
        batch_id = f"burst-{self._sent}"
        command = events_pb2.StepCommand(
            batch_id=batch_id, step="spellcheck", run_id=f"{batch_id}-run", attempt=1
        )
        envelope.add_essay_refs(
            command.essays, ((f"{batch_id}-essay-{i:05d}", f"text-{i}") for i in range(essays))
        )
        event = envelope.build(command, source_service="bench-burst", event_id=batch_id)
        record = OutgoingRecord(
            self._commands,
            envelope.encode(event),
            batch_id.encode(),
            tuple(envelope.headers(event)),
        )
        done = asyncio.get_running_loop().create_future()
        self._waiting[batch_id] = (essays, [], done)
        try:
            await self._bus.write([record])
            return await asyncio.wait_for(done, within)
        finally:
            del self._waiting[batch_id]

    async def deliveries(self, essays: int, count: int) -> list[float]:
        """``count`` bursts, one after another."""
        return [await self.delivery(essays) for _ in range(count)]


@asynccontextmanager
async def outcome_delivery(env: Mapping[str, str], started: list[Process]) -> AsyncIterator[Burst]:
    """``Burst`` on a namespace of its own (``<namespace>.burst``) with a demo worker process of
    its own (appended to ``started``), joined and warmed up."""
    bootstrap, space = env["KAFKA_BOOTSTRAP_SERVERS"], f"{env['KAFKA_NAMESPACE']}.burst"
    await create_topics(bootstrap, all_topics(space), partitions=PARTITIONS)
    worker = await spawn("burst-worker", "launcher.workers", {**env, "KAFKA_NAMESPACE": space})
    started.append(worker)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(stop, worker)
        await wait_workers(bootstrap, space, [worker])
        config = KafkaConfig(bootstrap, namespace=space, client_id="bench-burst")
        bus = await stack.enter_async_context(KafkaBus(config))
        probe = Burst(bus)
        kinds = [EventKind.ESSAY_STEP_OUTCOME]
        sink = bus.consumer("burst-sink", kinds, probe.arrive, service="bench-burst")
        await stack.enter_async_context(sink)
        stack.push_async_callback(_finish, sink, asyncio.create_task(sink.run()))
        await probe.delivery(100, within=START_TIMEOUT)  # the sink has joined
        await probe.deliveries(1_000, 3)  # warm-up
        yield probe
