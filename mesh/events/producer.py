"""The Kafka producer: idempotent, ``acks=all``, records keyed by batch id.

``Producer`` implements ``EventPublisher`` (envelopes to their kind's topic) and
``RecordWriter`` (raw records: dead letters, outbox rows, replays). A write of many records is
sent as one record batch per partition (aiokafka's ``create_batch``/``send_batch``): the records
are grouped by the partition Kafka's default partitioner (murmur2 of the key, as every Kafka
client computes it) gives their key, so a key's records keep their order whoever produces them,
and the producer is asked once per batch instead of once per record.

Idempotence rests on the producer id and per-partition sequence numbers the client and the
broker share. When they fall out of step (a broker restarted without the producer's state:
``OutOfOrderSequenceNumber``, ``UnknownProducerId``; or the id was fenced), every later batch to
that partition fails the same way, and retrying cannot help. The write that meets one raises it
as usual, and the producer replaces its client with a new one (a new producer id, sequences from
zero), so the caller's retry goes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import OutOfOrderSequenceNumber, ProducerFenced, UnknownProducerId
from aiokafka.partitioner import DefaultPartitioner

from mesh.events.bus import OutgoingEvent, OutgoingRecord
from mesh.events.security import PLAINTEXT, KafkaSecurity
from mesh.resource import AsyncResource

log = logging.getLogger(__name__)

# The client's idempotence state no longer matches the broker's (module docstring).
OUT_OF_STEP: tuple[type[Exception], ...] = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    ProducerFenced,
)
REPLACED_STOP_TIMEOUT = 10.0  # seconds the replaced client may take to stop


class Producer(AsyncResource):
    """An idempotent Kafka producer; use as ``async with Producer(...) as producer``."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        namespace: str = "",
        client_id: str = "huleedu-mesh",
        linger_ms: int = 0,
        request_timeout_ms: int = 30_000,
        max_batch_size: int = 256 * 1024,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self.namespace = namespace
        self._options: dict[str, Any] = dict(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            request_timeout_ms=request_timeout_ms,
            max_batch_size=max_batch_size,
            **security.client_options(),
        )
        self._kafka: Any = AIOKafkaProducer(**self._options)
        self._partitioner = DefaultPartitioner()
        self._replacing = asyncio.Lock()
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
            async with self._replacing:
                await self._kafka.stop()

    async def publish(self, event: OutgoingEvent) -> None:
        """Publish one event to its kind's topic and wait for the acknowledgement."""
        await self.write([event.to_record(self.namespace)])

    async def publish_many(self, events: Sequence[OutgoingEvent]) -> None:
        """Publish many events; wait for every acknowledgement."""
        await self.write([event.to_record(self.namespace) for event in events])

    async def write(self, records: Sequence[OutgoingRecord]) -> None:
        """Send every record, one batch per partition; wait for every acknowledgement and raise
        the first failure."""
        kafka = self._kafka
        futures: list[asyncio.Future[Any]] = []
        error: BaseException | None = None
        try:
            for (topic, partition), group in (await self._by_partition(kafka, records)).items():
                futures += await self._send(kafka, topic, partition, group)
        except Exception as exc:
            error = exc
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and error is None:
                error = result
        if error is not None:
            if isinstance(error, OUT_OF_STEP):
                await self._replace(kafka, error)
            raise error

    async def _replace(self, kafka: Any, error: BaseException) -> None:
        """Replace ``kafka``, a client whose idempotence state is out of step with the broker's,
        by a new one (once, whichever write met the error first)."""
        async with self._replacing:
            if self._kafka is not kafka or self._closed:
                return
            log.warning(
                "Kafka producer state out of step with the broker (%r): starting a new producer",
                error,
            )
            fresh = AIOKafkaProducer(**self._options)
            try:
                await fresh.start()
            except Exception as exc:  # the broker is away again: the next such write retries
                log.warning("the new producer did not start (%r)", exc)
                with contextlib.suppress(Exception):
                    await fresh.stop()
                return
            self._kafka = fresh
            try:
                await asyncio.wait_for(kafka.stop(), REPLACED_STOP_TIMEOUT)
            except Exception as exc:  # what it still held failed with the same error
                log.debug("the replaced producer stopped with %r", exc)

    async def _by_partition(
        self, kafka: Any, records: Sequence[OutgoingRecord]
    ) -> dict[tuple[str, int], list[OutgoingRecord]]:
        partitions: dict[str, list[int]] = {}
        chosen: dict[tuple[str, bytes | None], int] = {}
        groups: dict[tuple[str, int], list[OutgoingRecord]] = {}
        for record in records:
            topic = record.topic
            partition = chosen.get((topic, record.key)) if record.key is not None else None
            if partition is None:
                known = partitions.get(topic)
                if known is None:
                    known = partitions[topic] = sorted(await kafka.partitions_for(topic))
                partition = self._partitioner(record.key, known, known)
                chosen[(topic, record.key)] = partition
            groups.setdefault((topic, partition), []).append(record)
        return groups

    async def _send(
        self, kafka: Any, topic: str, partition: int, records: Sequence[OutgoingRecord]
    ) -> list[asyncio.Future[Any]]:
        futures: list[asyncio.Future[Any]] = []
        batch = kafka.create_batch()
        for record in records:
            headers = list(record.headers)
            if batch.append(key=record.key, value=record.value, timestamp=None, headers=headers):
                continue
            if batch.record_count():
                futures.append(await kafka.send_batch(batch, topic, partition=partition))
                batch = kafka.create_batch()
                if batch.append(
                    key=record.key, value=record.value, timestamp=None, headers=headers
                ):
                    continue
            # Too large for a batch of its own: the plain send reports why (a size error).
            futures.append(
                await kafka.send(
                    topic, record.value, key=record.key, partition=partition, headers=headers
                )
            )
        if batch.record_count():
            futures.append(await kafka.send_batch(batch, topic, partition=partition))
        return futures
