"""The step workers of a scenario: the demo workers, in this process, noting what they send.

``launcher.workers.DemoWorkers`` answers each step command with one outcome per essay; here it
writes through a ``LedgerWriter``, which notes every outcome in the ledger before it goes out,
repeats a share of them (a duplicate storm: each repeat written after the originals, so many
arrive after their step completed) and spreads each write over several producers at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

from prometheus_client import CollectorRegistry

from chaos.ledger import Ledger
from generated.huleedu.events.v1 import events_pb2
from launcher.workers import ACCEPTED, COMMANDS, DemoWorkers
from mesh.events import envelope
from mesh.events.bus import OutgoingRecord, RecordWriter
from mesh.events.kafka import KafkaBus, KafkaConfig
from mesh.events.producer import Producer

GROUP = "chaos-workers"  # the bus prefixes it with the namespace
PARTITIONS = 3


class LedgerWriter:
    """A ``RecordWriter`` for the demo workers' outcomes (see the module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        writers: Sequence[RecordWriter],
        duplicate_share: float = 0.0,
        seed: int = 20,
    ) -> None:
        self._ledger = ledger
        self._writers = writers
        self._share = duplicate_share
        self._random = random.Random(seed)

    async def write(self, records: Sequence[OutgoingRecord]) -> None:
        repeats = [
            record
            for record in records
            if self._random.random() < self._share
            for _ in range(self._random.randint(1, 2))
        ]
        for record in [*records, *repeats]:
            self._note(record)
        await self._spread(records)
        if repeats:
            await self._spread(repeats)

    def _note(self, record: OutgoingRecord) -> None:
        outcome = envelope.decode(record.value).essay_step_outcome
        succeeded = outcome.outcome == events_pb2.STEP_OUTCOME_SUCCEEDED
        self._ledger.sent((outcome.batch_id, outcome.step, outcome.essay_id), succeeded)

    async def _spread(self, records: Sequence[OutgoingRecord]) -> None:
        """Round robin over the writers, all writing at once."""
        count = len(self._writers)
        shares = [records[i::count] for i in range(count)]
        await asyncio.gather(*(w.write(s) for w, s in zip(self._writers, shares, strict=True) if s))


@asynccontextmanager
async def running_workers(
    bootstrap: str,
    namespace: str,
    ledger: Ledger,
    *,
    delay: float,
    failure_rate: float,
    duplicate_share: float = 0.0,
    producers: int = 1,
) -> AsyncIterator[None]:
    """Demo workers consuming the namespace's step commands until the block ends."""
    async with AsyncExitStack() as stack:
        config = KafkaConfig(bootstrap, namespace=namespace, client_id=GROUP, partitions=PARTITIONS)
        bus = await stack.enter_async_context(KafkaBus(config, CollectorRegistry()))
        writers: list[RecordWriter] = [bus]
        for _ in range(producers - 1):
            extra = Producer(bootstrap, namespace=namespace, client_id=GROUP)
            writers.append(await stack.enter_async_context(extra))
        writer = LedgerWriter(ledger, writers, duplicate_share)
        handler = DemoWorkers(writer, failure_rate, delay, namespace)
        consumer = bus.consumer(GROUP, COMMANDS, handler, service=GROUP, accept=ACCEPTED)
        await stack.enter_async_context(consumer)
        task = asyncio.create_task(consumer.run(), name=GROUP)
        try:
            yield
        finally:
            await consumer.stop()
            await asyncio.gather(task, return_exceptions=True)
