"""Properties of counting, on the in-memory store (the reference the other stores match)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from conductor_server.domain.model import BatchRegistration, Outcome, OutcomeRecord
from conductor_server.state import MemoryStateStore, RecordResult
from tests.unit.test_state_contract import ESSAYS, STEPS

records = st.builds(
    OutcomeRecord,
    batch_id=st.just("b1"),
    step=st.sampled_from([*STEPS, "unknown"]),
    essay_id=st.sampled_from([*ESSAYS, "stranger"]),
    outcome=st.sampled_from(Outcome),
)
# Histories biased towards completing steps: mostly successes, few strangers.
histories = st.lists(st.lists(records, min_size=1, max_size=12), min_size=1, max_size=25)


async def play(store: MemoryStateStore, calls: list[list[OutcomeRecord]]) -> list[RecordResult]:
    results: list[RecordResult] = []
    for call in calls:
        results += await store.record_outcomes(call)
    return results


@settings(max_examples=200, deadline=None)
@given(calls=histories)
async def test_every_outcome_counts_once_and_every_step_completes_once(
    calls: list[list[OutcomeRecord]],
) -> None:
    store = MemoryStateStore(STEPS)
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    results = await play(store, calls)
    state = await store.batch_state("b1")

    assert sum(r.newly_recorded for r in results) == sum(
        s.succeeded + s.failed for s in state.steps
    )
    completed = {name: 0 for name in STEPS}
    for result in results:
        assert result.ok == (result.state is not None)
        if result.completed_step:
            completed[result.record.step] += 1
        for cascaded in result.cascaded:
            completed[cascaded.step] += 1
    for step in state.steps:
        assert step.succeeded + step.failed <= step.total <= len(ESSAYS)
        assert completed[step.step] == (1 if step.complete else 0)

    # Redelivering what was accepted changes nothing. (A record refused because its step was
    # not ready yet may rightly be accepted when it comes again later.)
    replayed = await play(store, [[r.record for r in results if r.ok]])
    assert not any(r.newly_recorded or r.completed_step or r.cascaded for r in replayed)
    assert await store.batch_state("b1") == state
