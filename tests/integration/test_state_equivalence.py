"""Random histories give the same answers from every store as from the in-memory reference."""

from __future__ import annotations

import random
from typing import Any

import pytest

from conductor_server.domain.model import BatchRegistration, Outcome, OutcomeRecord
from conductor_server.state import MemoryStateStore, RecordResult, StateStore
from tests.integration.test_state_contract import open_store
from tests.unit.test_state_contract import STEPS

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
    """Everything but ``state``, which a batched store may report at the end of the call."""
    error = result.error
    return (
        result.record,
        result.newly_recorded,
        result.completed_step,
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


@pytest.mark.parametrize("kind", ["redis", "postgres", "composed"])
@pytest.mark.parametrize("seed", range(4))
async def test_a_store_answers_like_the_reference(
    kind: str, seed: int, redis_url: str, database_url: str
) -> None:
    async with MemoryStateStore(STEPS) as reference:
        expected, expected_states = await play(reference, seed)
    async with await open_store(kind, redis_url, database_url) as store:
        results, states = await play(store, seed)
    assert [summary(r) for r in results] == [summary(r) for r in expected]
    assert states == expected_states
    assert any(r.completed_step for r in expected)  # the history does complete steps
    if kind == "redis":  # the script answers each record with the state right after it
        assert [r.state for r in results] == [r.state for r in expected]
