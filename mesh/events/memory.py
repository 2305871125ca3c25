"""The in-process event bus of the embedded mode and service tests.

Topics are in-memory logs of one partition holding the same bytes Kafka would (encoded
envelopes, keys, headers), so codec, dispatcher, retry decisions and dead letters behave as on
Kafka. Consumer groups keep a committed offset per topic; members of one group take turns a
batch at a time, so a group sees each record once per commit (redelivery after a failure, as on
Kafka). Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from mesh.events.bus import BatchHandler, OutgoingEvent, OutgoingRecord
from mesh.events.deadletter import DeadLetterQueue, PayloadVault
from mesh.events.dispatcher import Dispatcher, Partition
from mesh.events.retry import DEFAULT_BACKOFF, Backoff
from mesh.events.topics import EventKind, topic_name
from mesh.resource import AsyncResource

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record in a memory topic (the ``mesh.events.bus.Record`` shape)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


class MemoryBus(AsyncResource):
    """In-process topics; an ``EventPublisher``, a ``RecordWriter`` and a consumer factory."""

    def __init__(self, namespace: str = "") -> None:
        self.namespace = namespace
        self._logs: defaultdict[str, list[StoredRecord]] = defaultdict(list)
        self._committed: dict[tuple[str, str], int] = {}  # (group, topic) -> next offset
        self._group_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._listeners: set[asyncio.Event] = set()

    async def close(self) -> None:
        """Nothing to release: the topics stay readable."""

    async def publish(self, event: OutgoingEvent) -> None:
        await self.write([event.to_record(self.namespace)])

    async def publish_many(self, events: Sequence[OutgoingEvent]) -> None:
        await self.write([event.to_record(self.namespace) for event in events])

    async def write(self, records: Sequence[OutgoingRecord]) -> None:
        now = int(time.time() * 1000)
        for r in records:
            log_ = self._logs[r.topic]
            log_.append(StoredRecord(r.topic, 0, len(log_), now, r.key, r.value, tuple(r.headers)))
        for listener in self._listeners:
            listener.set()

    def records(self, topic: str) -> list[StoredRecord]:
        """Every record of ``topic`` so far (a copy)."""
        return list(self._logs.get(topic, ()))

    def committed(self, group: str, topic: str) -> int:
        """The group's next offset on ``topic`` (0 before any commit)."""
        return self._committed.get((group, topic), 0)

    def consumer(
        self,
        group: str,
        kinds: Sequence[EventKind],
        handler: BatchHandler,
        *,
        service: str,
        accept: Collection[str] | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        max_records: int = 500,
        vault: PayloadVault | None = None,
    ) -> MemoryConsumer:
        """A consumer of ``kinds`` in ``group`` (an ``EventConsumer``). Memory topics have no
        size limit, so no dead letter needs the ``vault``."""
        return MemoryConsumer(
            self,
            group,
            [topic_name(kind, self.namespace) for kind in kinds],
            handler,
            service=service,
            accept=accept,
            backoff=backoff,
            max_records=max_records,
        )

    # used by MemoryConsumer
    def _poll(
        self, group: str, topics: Sequence[str], skip: Collection[str], limit: int
    ) -> dict[Partition, list[StoredRecord]]:
        polled: dict[Partition, list[StoredRecord]] = {}
        for topic in topics:
            if topic in skip:
                continue
            start = self.committed(group, topic)
            records = self._logs.get(topic, [])[start : start + limit]
            if records:
                polled[(topic, 0)] = records
        return polled

    def _commit(self, group: str, offsets: dict[Partition, int]) -> None:
        for (topic, _), offset in offsets.items():
            self._committed[(group, topic)] = max(offset, self.committed(group, topic))


class MemoryConsumer(AsyncResource):
    """Runs a handler over memory topics with the Kafka consumer's semantics."""

    def __init__(
        self,
        bus: MemoryBus,
        group: str,
        topics: Sequence[str],
        handler: BatchHandler,
        *,
        service: str,
        accept: Collection[str] | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        max_records: int = 500,
    ) -> None:
        self._bus = bus
        self.group = group
        self.topics = list(topics)
        self._dispatcher = Dispatcher(handler, accept=accept, backoff=backoff)
        self._dlq = DeadLetterQueue(bus, consumer_group=group, service=service, max_bytes=None)
        self._max_records = max_records
        self._paused_until: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._running = False

    async def run(self) -> None:
        self._running = True
        self._stopped.clear()
        self._bus._listeners.add(self._wake)
        try:
            while not self._stopping:
                self._wake.clear()
                if not await self._step():
                    await self._idle()
        finally:
            self._bus._listeners.discard(self._wake)
            self._running = False
            self._stopped.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._running:
            await self._stopped.wait()

    async def close(self) -> None:
        await self.stop()

    async def _step(self) -> bool:
        """Process one batch; False when there was nothing to do."""
        now = time.monotonic()
        paused = {t for t, at in self._paused_until.items() if at > now}
        async with self._bus._group_locks[self.group]:
            polled = self._bus._poll(self.group, self.topics, paused, self._max_records)
            if not polled:
                return False
            plan = await self._dispatcher.dispatch(polled)
            try:
                await self._dlq.put(plan.dead)
            except Exception as exc:  # the writer is this bus: only a bug gets here
                log.exception("dead-letter write failed")
                plan = plan.without_dead_letters(exc, 1.0)
            self._bus._commit(self.group, plan.commit)
        for (topic, _), resume in plan.resume.items():
            self._paused_until[topic] = time.monotonic() + resume.delay
            log.warning("transient failure on %s@%d: %r", topic, resume.offset, resume.error)
        return True

    async def _idle(self) -> None:
        timeout = 1.0
        if self._paused_until:
            now = time.monotonic()
            pending = [at - now for at in self._paused_until.values() if at > now]
            if pending:
                timeout = min(timeout, min(pending))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
