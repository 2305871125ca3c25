"""The counting rule (``conductor_server.domain.counting``): the step table, and properties of
counting on the in-memory store (the reference the other stores are held to)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conductor_server.domain.counting import StepCount, StepTable, replay
from conductor_server.domain.model import (
    BatchRegistration,
    Outcome,
    OutcomeRecord,
    StepDefinition,
    StepState,
    StepStatus,
)
from conductor_server.ports import RecordResult
from conductor_server.store.memory import MemoryStateStore
from tests.support.state_contract import ESSAYS, STEPS

records = st.builds(
    OutcomeRecord,  # every other field as a worker's first attempt reports it
    batch_id=st.just("b1"),
    step=st.sampled_from([*STEPS, "unknown"]),
    essay_id=st.sampled_from([*ESSAYS, "stranger"]),
    outcome=st.sampled_from(Outcome),
    output_storage_id=st.just(""),
    event_id=st.just(""),
    run_id=st.just(""),
    attempt=st.just(1),
    error_code=st.just(""),
    error_message=st.just(""),
    trace=st.just(""),
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


def step(name: str, *deps: str, ratio: float = 1.0) -> StepDefinition:
    return StepDefinition(name, "svc", name, depends_on=deps, min_success_ratio=ratio)


def test_dependencies_come_first_and_ties_keep_declaration_order() -> None:
    table = StepTable({s.name: s for s in [step("c", "b"), step("b"), step("a"), step("d", "a")]})
    assert table.order == ("b", "c", "a", "d")
    assert table.dependants == {"b": ("c",), "c": (), "a": ("d",), "d": ()}


def test_a_bad_graph_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown step 'x'"):
        StepTable({"a": step("a", "x")})
    with pytest.raises(ValueError, match="cycle"):
        StepTable({"a": step("a", "b"), "b": step("b", "a")})


def test_derive_applies_the_completion_rules() -> None:
    table = StepTable(STEPS)
    states = table.derive(
        {
            "spellcheck": StepCount(3, 1, 4),  # unsatisfied: needs all four
            "triage": StepCount(1, 0, 4),
        }
    )
    assert states == (
        StepState("spellcheck", 3, 1, 4, StepStatus.UNSATISFIED),
        StepState("nlp", 0, 0, 0, StepStatus.BLOCKED),
        StepState("cj_assessment", 0, 0, 0, StepStatus.BLOCKED),
        StepState("ai_feedback", 0, 0, 0, StepStatus.BLOCKED),  # blocked through its dependencies
        StepState("triage", 1, 0, 4, StepStatus.IN_PROGRESS),
        StepState("review", 0, 0, 0, StepStatus.WAITING),
        StepState("scoring", 0, 0, 0, StepStatus.WAITING),  # no count: nothing known yet
    )


@settings(max_examples=100, deadline=None)
@given(calls=histories)
async def test_a_replay_of_the_recorded_outcomes_gives_the_same_counts(
    calls: list[list[OutcomeRecord]],
) -> None:
    """What the PostgreSQL store does for a step the table gained: count a batch's outcomes
    again from scratch. It must agree with counting them as they came."""
    store = MemoryStateStore(STEPS)
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    results = await play(store, calls)
    outcomes: dict[str, dict[str, Outcome]] = {}
    for result in results:
        if result.newly_recorded:
            outcomes.setdefault(result.record.essay_id, {})[result.record.step] = (
                result.record.outcome
            )
    replayed = replay(StepTable(STEPS), ESSAYS, outcomes)
    assert replayed.states() == (await store.batch_state("b1")).steps
