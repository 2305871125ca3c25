"""A consumer process for the crash tests, and the idempotent handler the Kafka tests share.

``python -m tests.integration.consumer_proc BOOTSTRAP DSN NAMESPACE GROUP`` consumes
``EssayStepOutcome`` events and records each handled event id in PostgreSQL (one round trip per
batch); a repeat of an id only bumps its ``deliveries`` count, so the effect happens once. An
outcome for a batch named ``unknown-*`` is rejected as a permanent domain error. SIGTERM stops
it gracefully (finish the batch, commit, leave the group).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

import asyncpg

from mesh.events.bus import Message, Rejection
from mesh.events.consumer import Consumer, ConsumerConfig
from mesh.events.producer import Producer
from mesh.events.retry import Backoff, PermanentError
from mesh.events.topics import EventKind

KIND = EventKind.ESSAY_STEP_OUTCOME
SCHEMA = """
CREATE TABLE IF NOT EXISTS handled (
    event_id    TEXT PRIMARY KEY,
    part        INTEGER NOT NULL,
    record_offset BIGINT NOT NULL,
    deliveries  INTEGER NOT NULL DEFAULT 1
)
"""
_RECORD = """
INSERT INTO handled (event_id, part, record_offset)
SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[])
ON CONFLICT (event_id) DO UPDATE SET deliveries = handled.deliveries + 1
"""
FAST_BACKOFF = Backoff(initial=0.05, cap=1.0)


class UnknownBatch(PermanentError):
    """An outcome for a batch the conductor never registered."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"unknown batch {batch_id!r}")
        self.batch_id = batch_id


class PgRecorder:
    """Idempotent handler: one INSERT ... ON CONFLICT per batch; rejects unknown batches."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.durable: set[tuple[str, int, int]] = set()  # (topic, partition, offset) written

    async def __call__(self, messages: Sequence[Message]) -> list[Rejection]:
        rejected: list[Rejection] = []
        good: dict[str, Message] = {}
        for m in messages:
            batch_id = m.envelope.essay_step_outcome.batch_id
            if batch_id.startswith("unknown"):
                rejected.append(Rejection(m, UnknownBatch(batch_id)))
            else:
                good[m.event_id] = m
        if good:
            await self._pool.execute(
                _RECORD,
                list(good),
                [m.record.partition for m in good.values()],
                [m.record.offset for m in good.values()],
            )
            self.durable.update(
                (m.record.topic, m.record.partition, m.record.offset) for m in good.values()
            )
        return rejected


async def open_pool(dsn: str) -> Any:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, command_timeout=10)
    await pool.execute(SCHEMA)
    return pool


def config(bootstrap: str, namespace: str, group: str) -> ConsumerConfig:
    return ConsumerConfig(
        bootstrap,
        group_id=group,
        service="consumer-proc",
        namespace=namespace,
        max_records=500,
        backoff=FAST_BACKOFF,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
    )


async def main(bootstrap: str, dsn: str, namespace: str, group: str) -> None:
    pool = await open_pool(dsn)
    try:
        async with (
            Producer(bootstrap, namespace=namespace) as dead_letters,
            Consumer(
                config(bootstrap, namespace, group),
                [KIND],
                PgRecorder(pool),
                dead_letters,
                accept={"essay_step_outcome"},
            ) as consumer,
        ):
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(consumer.stop()))
            print("ready", flush=True)
            await consumer.run()
    finally:
        await pool.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(*sys.argv[1:5]))
