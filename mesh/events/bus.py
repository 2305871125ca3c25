"""The event bus seam: what services publish and consume, and the Protocols both buses implement.

Two implementations of ``Bus``: Kafka (``mesh.events.kafka.KafkaBus``) and the in-process bus of
the embedded mode (``mesh.events.memory.MemoryBus``).

Publishing side: an ``OutgoingEvent`` (an envelope, its event kind and key) becomes an
``OutgoingRecord`` (topic, key, value bytes, headers), which a ``RecordWriter`` writes.
Consuming side: a ``BatchHandler`` receives the decoded ``Message`` objects of one poll and
returns the ``Rejection`` of any it could never process (or raises for the whole batch).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope as codec
from mesh.events.topics import EventKind, topic_name
from mesh.tracing import propagation

if TYPE_CHECKING:
    from mesh.events.deadletter import PayloadVault


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """An event to publish. ``key`` (the batch id) defaults to the one its payload names.

    ``trace`` is the W3C ``traceparent`` of its cause, by default the span current when the
    event is built (not when it is relayed from the outbox); it goes out as a Kafka header.
    """

    kind: EventKind
    envelope: events_pb2.EventEnvelope
    key: str | None = None
    trace: str = field(default_factory=propagation.current)

    def to_record(self, namespace: str = "") -> OutgoingRecord:
        key = self.key if self.key is not None else codec.partition_key(self.envelope)
        return OutgoingRecord(
            topic=topic_name(self.kind, namespace),
            value=codec.encode(self.envelope),
            key=key.encode() if key else None,
            headers=tuple(codec.headers(self.envelope, self.trace)),
        )


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record ready for a topic: bytes in, bytes out (dead letters, outbox rows, replays)."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()


class Record(Protocol):
    """A consumed record (aiokafka's ``ConsumerRecord`` has this shape)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...  # milliseconds since the epoch
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class Message:
    """A consumed record with its decoded, validated envelope; compared by identity.

    ``trace`` is the ``traceparent`` of the span processing it (``mesh.tracing.messaging``; ``""``
    when tracing is off): events the message causes carry it.
    """

    __slots__ = ("envelope", "record", "trace")

    def __init__(self, record: Record, envelope: events_pb2.EventEnvelope) -> None:
        self.record = record
        self.envelope = envelope
        self.trace = ""

    @property
    def event_id(self) -> str:
        return self.envelope.event_id


@dataclass(frozen=True, slots=True, eq=False)
class Rejection:
    """A message the handler could not process, and why (``error.retriable`` decides the fate)."""

    message: Message
    error: BaseException


# Handles the messages of one poll (one PostgreSQL round trip, one Redis pipeline). Returns the
# rejected ones (or None). Raising fails the whole batch: a transient error retries it; a
# permanent one makes the consumer retry the messages one by one to isolate the bad one.
BatchHandler = Callable[[Sequence[Message]], Awaitable[Iterable[Rejection] | None]]


class RecordWriter(Protocol):
    """Writes records and returns once every one is acknowledged."""

    async def write(self, records: Sequence[OutgoingRecord]) -> None: ...


class EventPublisher(Protocol):
    """Publishes events; returns once they are acknowledged."""

    async def publish(self, event: OutgoingEvent) -> None: ...

    async def publish_many(self, events: Sequence[OutgoingEvent]) -> None: ...


class EventConsumer(Protocol):
    """Runs a handler over subscribed topics: ``start()`` (join), ``run()`` until ``stop()``,
    ``close()`` (leave)."""

    async def start(self) -> None: ...

    async def run(self) -> None: ...

    async def stop(self) -> None: ...

    async def close(self) -> None: ...


class Bus(EventPublisher, RecordWriter, Protocol):
    """Publishes events and records, and makes consumers of its topics."""

    namespace: str

    def consumer(
        self,
        group: str,
        kinds: Sequence[EventKind],
        handler: BatchHandler,
        *,
        service: str,
        accept: Collection[str] | None = None,
        vault: PayloadVault | None = None,
    ) -> EventConsumer: ...
