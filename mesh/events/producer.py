"""The Kafka producer: idempotent, ``acks=all``, records keyed by batch id.

``Producer`` implements ``EventPublisher`` (envelopes to their kind's topic) and
``RecordWriter`` (raw records: dead letters, outbox rows, replays).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from mesh.events.bus import OutgoingEvent, OutgoingRecord
from mesh.resource import AsyncResource

log = logging.getLogger(__name__)


class Producer(AsyncResource):
    """An idempotent Kafka producer; use as ``async with Producer(...) as producer``."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        namespace: str = "",
        client_id: str = "huleedu-mesh",
        linger_ms: int = 5,
        request_timeout_ms: int = 30_000,
        max_batch_size: int = 256 * 1024,
    ) -> None:
        self.namespace = namespace
        self._kafka: Any = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            request_timeout_ms=request_timeout_ms,
            max_batch_size=max_batch_size,
        )
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if not self._started:
            await self._kafka.start()
            self._started = True

    async def close(self) -> None:
        """Flush what is queued and close; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            await self._kafka.stop()

    async def publish(self, event: OutgoingEvent) -> None:
        """Publish one event to its kind's topic and wait for the acknowledgement."""
        record = event.to_record(self.namespace)
        await self._kafka.send_and_wait(
            record.topic, record.value, key=record.key, headers=list(record.headers)
        )

    async def publish_many(self, events: Sequence[OutgoingEvent]) -> None:
        """Publish many events (sent together, batched by the client); wait for every ack."""
        await self.write([event.to_record(self.namespace) for event in events])

    async def write(self, records: Sequence[OutgoingRecord]) -> None:
        """Send every record, then wait for all acknowledgements; raise the first failure."""
        futures: list[asyncio.Future[Any]] = []
        error: BaseException | None = None
        try:
            for record in records:
                futures.append(
                    await self._kafka.send(
                        record.topic, record.value, key=record.key, headers=list(record.headers)
                    )
                )
        except Exception as exc:
            error = exc
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and error is None:
                error = result
        if error is not None:
            raise error
