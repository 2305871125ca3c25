"""Random histories give the same answers, and the same completion events, from the real stores
as from the in-memory store of the embedded mode; also from two PostgreSQL stores (replicas)
taking the calls in random turns, so that kept tallies are used, outdated and read again."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from conductor_server.domain.model import BatchRegistration, Outcome, OutcomeRecord
from conductor_server.ports import RecordResult, StateStore
from conductor_server.store.memory import MemoryStateStore
from conductor_server.store.postgres import PostgresStateStore
from mesh.events import envelope
from mesh.events.memory import MemoryBus
from mesh.events.topics import EventKind, topic_name
from tests.support.state_contract import STEPS
from tests.support.stores import composed_store, pool_of, postgres_store

BATCHES = {"b1": ("e1", "e2", "e3", "e4", "e5"), "b2": ("e1", "x1", "x2")}


def history(seed: int) -> list[list[OutcomeRecord]]:
    """Calls of 1-15 records, mostly successes of known essays, so steps do complete."""
    rng = random.Random(seed)
    calls = []
    for _ in range(40):
        call = []
        for _ in range(rng.randint(1, 15)):
            batch = rng.choice([*BATCHES, "b3"]) if rng.random() < 0.05 else "b1"
            essays = BATCHES.get(batch, ("e1",))
            essay = rng.choice(essays) if rng.random() < 0.95 else "stranger"
            step = rng.choice(list(STEPS)) if rng.random() < 0.97 else "unknown"
            outcome = Outcome.FAILED if rng.random() < 0.15 else Outcome.SUCCEEDED
            call.append(OutcomeRecord(batch, step, essay, outcome))
        calls.append(call)
    return calls


def summary(result: RecordResult) -> tuple[Any, ...]:
    error = result.error
    return (
        result.record,
        result.newly_recorded,
        result.completed_step,
        result.state,
        result.cascaded,
        type(error).__name__ if error else None,
        sorted(vars(error).items()) if error else None,
    )


async def play(store: StateStore, seed: int) -> tuple[list[RecordResult], list[Any]]:
    for batch, essays in BATCHES.items():
        await store.register_batch(BatchRegistration(batch, essays))
    results: list[RecordResult] = []
    for call in history(seed):
        results += await store.record_outcomes(call)
    return results, [await store.batch_state(batch) for batch in BATCHES]


class Replicas:
    """Two PostgreSQL stores over one database, each call going to either (seeded)."""

    def __init__(self, pool: Any, seed: int) -> None:
        self._stores = [PostgresStateStore(pool, STEPS), PostgresStateStore(pool, STEPS)]
        self._rng = random.Random(seed)

    def _next(self) -> PostgresStateStore:
        return self._stores[0] if self._rng.random() < 0.6 else self._stores[1]

    async def register_batch(self, registration: BatchRegistration) -> bool:
        return await self._next().register_batch(registration)

    async def record_outcomes(self, records: Sequence[OutcomeRecord]) -> list[RecordResult]:
        return await self._next().record_outcomes(records)

    async def batch_state(self, batch_id: str) -> Any:
        return await self._next().batch_state(batch_id)


@asynccontextmanager
async def replicas(database_url: str, seed: int) -> AsyncIterator[Any]:
    async with pool_of(database_url) as pool:
        yield Replicas(pool, seed)


async def outbox_completions(database_url: str) -> list[tuple[str, bytes]]:
    """(event id, payload bytes) of every completion the PostgreSQL store wrote, in order."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT payload FROM event_outbox ORDER BY id")
    finally:
        await conn.close()
    return [completion(row["payload"]) for row in rows]


def completion(value: bytes) -> tuple[str, bytes]:
    event = envelope.decode(value, accept={"batch_step_completed"})
    return event.event_id, event.batch_step_completed.SerializeToString()


@pytest.mark.parametrize("kind", ["postgres", "composed", "replicas"])
@pytest.mark.parametrize("seed", range(4))
async def test_a_store_answers_like_the_embedded_one(
    kind: str, seed: int, redis_url: str, database_url: str
) -> None:
    bus = MemoryBus()
    async with MemoryStateStore(STEPS, events_out=bus) as reference:
        expected, expected_states = await play(reference, seed)
    opened: Any
    if kind == "postgres":
        opened = postgres_store(database_url)
    elif kind == "composed":
        opened = composed_store(database_url, redis_url)
    else:
        opened = replicas(database_url, seed)
    async with opened as store:
        results, states = await play(store, seed)
    assert [summary(r) for r in results] == [summary(r) for r in expected]
    assert states == expected_states
    assert any(r.completed_step for r in expected)  # the history does complete steps
    # The same completions, with the same event ids and the same payloads, in the same order.
    published = bus.records(topic_name(EventKind.BATCH_STEP_COMPLETED))
    assert published
    assert await outbox_completions(database_url) == [completion(r.value or b"") for r in published]
