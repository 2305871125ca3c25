"""The transactional outbox: enqueue events in the caller's transaction, relay them to Kafka.

``enqueue`` writes rows to ``event_outbox`` inside the caller's transaction, so a state change
and the events it causes commit together (one round trip, notifying the relay on commit). The
``OutboxRelay`` takes unpublished rows in id order with ``FOR UPDATE SKIP LOCKED`` (replicas
share the work), writes each row's stored bytes, key and headers unchanged (so the event keeps
its id), waits for every acknowledgement, marks the rows published and commits. A relay that
dies between publishing and marking publishes those rows again on its next pass: the same event
id twice, never a lost event. It wakes on ``LISTEN``/``NOTIFY`` or after a short poll interval.
A failure of either backend (PostgreSQL or Kafka gone) backs off and retries; the relay carries
on once they are back, and its ``PgListener`` listens again on a new connection.

``OutboxMetrics``: the relay counts what it publishes and, every ``measure_interval`` seconds
between passes (off the path of the events), measures the backlog: how many rows wait and how
old the oldest is (``mesh_outbox_backlog_events``, ``mesh_outbox_oldest_event_age_seconds``).
Every replica measures the same table; aggregate with ``max``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from mesh.events import envelope as codec
from mesh.events.bus import OutgoingEvent, OutgoingRecord, RecordWriter
from mesh.events.retry import Backoff
from mesh.events.topics import EventKind, topic_name
from mesh.postgres.listen import PgListener
from mesh.resource import AsyncResource

log = logging.getLogger(__name__)

CHANNEL = "event_outbox"

_ENQUEUE = f"""
WITH inserted AS (
    INSERT INTO event_outbox (event_id, topic_kind, message_key, payload, headers)
    SELECT e, k, mk, p, h::jsonb
      FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::text[]) AS t(e, k, mk, p, h)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING 1
)
SELECT count(*) AS n, pg_notify('{CHANNEL}', '') FROM inserted HAVING count(*) > 0
"""

_CLAIM = """
SELECT id, topic_kind, message_key, payload, headers
  FROM event_outbox
 WHERE published_at IS NULL
 ORDER BY id
 LIMIT $1
   FOR UPDATE SKIP LOCKED
"""

# A failed pass waits at most 5 s before the next (a NOTIFY, once the listener is back, ends
# the wait sooner): after a long outage events flow again within seconds of PostgreSQL's return.
RELAY_BACKOFF = Backoff(initial=0.1, cap=5.0)

_MARK = "UPDATE event_outbox SET published_at = now() WHERE id = ANY($1::bigint[])"
_BACKLOG = """
SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age
  FROM event_outbox WHERE published_at IS NULL
"""


class OutboxMetrics:
    """What the relay publishes and what waits, over an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.relayed = Counter(
            "mesh_outbox_relayed_events_total",
            "Outbox events published to Kafka by this process's relay.",
            registry=registry,
        )
        self.backlog = Gauge(
            "mesh_outbox_backlog_events",
            "Outbox events not published yet (the whole table: every replica sees the same).",
            registry=registry,
        )
        self.oldest_age = Gauge(
            "mesh_outbox_oldest_event_age_seconds",
            "Age of the oldest outbox event not published yet (0 when none waits).",
            registry=registry,
        )


async def enqueue(conn: Any, events: Sequence[OutgoingEvent]) -> int:
    """Add ``events`` to the outbox in ``conn``'s transaction; return how many were new.

    An event whose id is already in the outbox is skipped (emitting it again is harmless).
    """
    if not events:
        return 0
    ids, kinds, keys, payloads, headers = [], [], [], [], []
    for event in events:
        key = event.key if event.key is not None else codec.partition_key(event.envelope)
        ids.append(event.envelope.event_id)
        kinds.append(event.kind.value)
        keys.append(key.encode() if key else None)
        payloads.append(codec.encode(event.envelope))
        stored = codec.headers(event.envelope, event.trace)  # with the trace context of its cause
        headers.append(json.dumps({k: v.decode() for k, v in stored}))
    row = await conn.fetchrow(_ENQUEUE, ids, kinds, keys, payloads, headers)
    return int(row["n"]) if row is not None else 0


def to_record(row: Any, namespace: str) -> OutgoingRecord:
    """The Kafka record of an outbox row: stored bytes, key and headers, unchanged."""
    stored = row["headers"]
    headers = json.loads(stored) if isinstance(stored, str) else dict(stored)
    return OutgoingRecord(
        topic=topic_name(EventKind(row["topic_kind"]), namespace),
        value=bytes(row["payload"]),
        key=bytes(row["message_key"]) if row["message_key"] is not None else None,
        headers=tuple((k, str(v).encode()) for k, v in headers.items()),
    )


class OutboxPublisher:
    """An ``EventPublisher`` that writes events to the outbox, each call its own transaction."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def publish(self, event: OutgoingEvent) -> None:
        await self.publish_many([event])

    async def publish_many(self, events: Sequence[OutgoingEvent]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await enqueue(conn, events)


class OutboxRelay(AsyncResource):
    """Relays outbox rows to Kafka; ``async with`` it, then ``await run()`` until ``stop()``."""

    def __init__(
        self,
        pool: Any,
        writer: RecordWriter,
        *,
        namespace: str = "",
        batch_size: int = 200,
        poll_interval: float = 1.0,
        backoff: Backoff = RELAY_BACKOFF,
        metrics: OutboxMetrics | None = None,
        measure_interval: float = 5.0,
    ) -> None:
        self._pool = pool
        self._writer = writer
        self._namespace = namespace
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._backoff = backoff
        self._metrics = metrics
        self._measure_interval = measure_interval
        self._measure_at = 0.0  # time.monotonic() of the next backlog measurement
        self._wake = asyncio.Event()
        self._stopping = False
        self._running = False
        self._stopped = asyncio.Event()
        self._closed = False

    async def relay_once(self) -> int:
        """Publish one batch of unpublished rows and mark them; return how many."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, self._batch_size)
            if not rows:
                return 0
            await self._writer.write([to_record(row, self._namespace) for row in rows])
            await conn.execute(_MARK, [row["id"] for row in rows])
        log.debug("relayed %d outbox event(s)", len(rows))
        if self._metrics is not None:
            self._metrics.relayed.inc(len(rows))
        return len(rows)

    async def measure(self) -> None:
        """Measure the backlog into the metrics (every ``measure_interval`` from ``run``)."""
        if self._metrics is None:
            return
        row = await self._pool.fetchrow(_BACKLOG)
        self._metrics.backlog.set(row["n"])
        self._metrics.oldest_age.set(row["age"])

    async def run(self) -> None:
        """Relay until ``stop()``: drain, then wait for a notification or the poll interval."""
        self._running = True
        self._stopped.clear()
        failures = 0
        listener = PgListener(self._pool, CHANNEL, self._notified)
        listener.start_soon()  # PostgreSQL may be down: the relay polls until it listens
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    relayed = await self.relay_once()
                except Exception as exc:
                    failures += 1
                    delay = self._backoff.ceiling(failures)
                    log.warning("outbox relay failed (%r); retrying in %.2fs", exc, delay)
                    await self._sleep(delay)
                    continue
                failures = 0
                await self._measure_when_due()
                if relayed < self._batch_size:
                    await self._sleep(self._poll_interval)
        finally:
            await listener.close()
            self._running = False
            self._stopped.set()

    async def _measure_when_due(self) -> None:
        if self._metrics is None or time.monotonic() < self._measure_at:
            return
        self._measure_at = time.monotonic() + self._measure_interval
        try:
            await self.measure()
        except Exception as exc:  # a failed measurement must not stop the relay
            log.debug("outbox backlog not measured: %r", exc)

    async def stop(self) -> None:
        """Finish the batch in flight and end ``run``."""
        self._stopping = True
        self._wake.set()
        if self._running:
            await self._stopped.wait()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.stop()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _notified(self, _payload: str) -> None:
        self._wake.set()
