"""The run state machine: start, complete steps, skip, finish (examples and properties)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_server.domain.errors import InvalidCompletion, RunConflict
from batch_server.domain.model import (
    Batch,
    BatchMetadata,
    Essay,
    EssayRef,
    PipelineRun,
    Resolution,
    RunStatus,
    RunStep,
    StepCompletion,
    StepPlan,
    StepResult,
    StepStatus,
)
from batch_server.domain.run import (
    BatchProgress,
    RunChange,
    apply_transition,
    complete_step,
    is_repeat,
    record_completion,
    start_run,
    with_run,
)

T0 = datetime(2025, 5, 25, 12, 0, tzinfo=UTC)
SATISFIED_LIKE = {StepStatus.SATISFIED, StepStatus.SKIPPED_ALREADY_SATISFIED}


def _batch(n: int) -> Batch:
    essays = tuple(Essay(f"e{i}", "", f"orig-{i}", f"orig-{i}") for i in range(n))
    return Batch("b1", essays, BatchMetadata(), T0)


def _start(
    progress: BatchProgress, steps: list[StepPlan], pruned: tuple[str, ...] = ()
) -> RunChange:
    return start_run(
        progress,
        run_id="r1",
        pipeline="p",
        resolution=Resolution(tuple(steps), pruned, "v1"),
        request_id="q1",
        correlation_id="c1",
        now=T0,
    )


def _completion(step: str, essays: list[str], failed: int, ratio: float = 0.9) -> StepCompletion:
    total = len(essays) + failed
    return StepCompletion(
        "b1",
        step,
        len(essays),
        failed,
        total,
        total > 0 and len(essays) / total >= ratio,
        tuple(EssayRef(e, f"{step}-{e}") for e in essays),
    )


def _apply(
    progress: BatchProgress, completion: StepCompletion, at: datetime
) -> tuple[BatchProgress, RunChange | None]:
    recorded = record_completion(progress, completion)
    change = complete_step(recorded.progress, completion, at)
    if change is None:
        return recorded.progress, None
    return with_run(recorded.progress, change.run), change


CHAIN = [StepPlan("spellcheck", "spellcheck"), StepPlan("nlp", "nlp", ("spellcheck",))]


def test_a_run_dispatches_its_first_step_with_every_essay() -> None:
    change = _start(BatchProgress(_batch(3), {}), CHAIN)
    assert change.run.status is RunStatus.RUNNING
    [dispatch] = change.dispatches
    assert dispatch.step == "spellcheck"
    assert [e.storage_id for e in dispatch.essays] == ["orig-0", "orig-1", "orig-2"]
    assert [(t.seq, t.step, t.step_status) for t in change.transitions] == [
        (1, "spellcheck", StepStatus.DISPATCHED)
    ]
    assert change.summary is None


def test_the_next_step_gets_the_succeeded_essays_and_their_latest_text() -> None:
    change = _start(BatchProgress(_batch(3), {}), CHAIN)
    progress = BatchProgress(_batch(3), {}, change.run)
    progress, after = _apply(progress, _completion("spellcheck", ["e0", "e2"], 1, 0.5), T0)
    assert after is not None
    [dispatch] = after.dispatches
    assert dispatch.essays == (EssayRef("e0", "spellcheck-e0"), EssayRef("e2", "spellcheck-e2"))
    assert after.run.step("spellcheck") == RunStep(
        "spellcheck", "spellcheck", (), StepStatus.SATISFIED, 2, 1, 3, ("e0", "e1", "e2"), 1
    )
    assert progress.batch.essays[1].current_storage_id == "orig-1"
    _, end = _apply(progress, _completion("nlp", ["e0", "e2"], 0), T0 + timedelta(seconds=5))
    assert end is not None
    assert end.run.status is RunStatus.COMPLETED_WITH_FAILURES
    assert end.run.completed_steps == ("spellcheck", "nlp")
    assert end.summary is not None
    assert (end.summary.succeeded_essays, end.summary.failed_essays) == (2, 1)
    assert end.summary.duration_seconds == 5.0


def test_a_step_of_two_dependencies_gets_the_essays_that_succeeded_in_both() -> None:
    steps = [
        StepPlan("spellcheck", "spellcheck"),
        StepPlan("nlp", "nlp"),
        StepPlan("ai_feedback", "ai_feedback", ("spellcheck", "nlp")),
    ]
    change = _start(BatchProgress(_batch(4), {}), steps)
    assert [d.step for d in change.dispatches] == ["spellcheck", "nlp"]
    progress = BatchProgress(_batch(4), {}, change.run)
    progress, after = _apply(progress, _completion("spellcheck", ["e0", "e1", "e3"], 1, 0.5), T0)
    assert after is not None
    assert after.dispatches == ()
    progress, after = _apply(progress, _completion("nlp", ["e1", "e2", "e3"], 1, 0.5), T0)
    assert after is not None
    [dispatch] = after.dispatches
    assert dispatch.step == "ai_feedback"
    # e0 failed nlp and e2 spellcheck; each essay goes with its latest text (nlp's here)
    assert dispatch.essays == (EssayRef("e1", "nlp-e1"), EssayRef("e3", "nlp-e3"))
    dispatched = after.run.step("ai_feedback")
    assert dispatched is not None
    assert dispatched.essays == ("e1", "e3")


def test_an_unsatisfied_step_skips_its_dependants_and_fails_the_run() -> None:
    change = _start(BatchProgress(_batch(4), {}), CHAIN)
    progress = BatchProgress(_batch(4), {}, change.run)
    _, after = _apply(progress, _completion("spellcheck", ["e0"], 3), T0)
    assert after is not None
    assert after.dispatches == ()
    assert after.run.status is RunStatus.FAILED
    assert [(t.step, t.step_status, t.run_status) for t in after.transitions] == [
        ("spellcheck", StepStatus.UNSATISFIED, RunStatus.RUNNING),
        ("nlp", StepStatus.SKIPPED_DUE_TO_DEPENDENCY_FAILURE, RunStatus.FAILED),
    ]
    assert after.run.finished_at == T0
    assert after.summary is not None
    assert after.summary.failed_essays == 3


def test_a_run_whose_steps_are_all_pruned_completes_at_once() -> None:
    change = _start(BatchProgress(_batch(2), {}), [], pruned=("spellcheck",))
    assert change.run.status is RunStatus.COMPLETED
    assert change.run.finished_at == T0
    assert change.run.pruned_steps == ("spellcheck",)
    assert change.transitions == ()
    assert change.summary is not None


def test_pruned_dependencies_narrow_the_essays_by_their_recorded_result() -> None:
    result = StepResult("spellcheck", True, 1, 1, 2, {"e1": "fixed-1"})
    batch = _batch(2)
    batch = dataclasses.replace(
        batch,
        essays=(
            batch.essays[0],
            batch.essays[1]._replace(current_storage_id="fixed-1"),
        ),
    )
    change = _start(BatchProgress(batch, {"spellcheck": result}), CHAIN[1:], pruned=("spellcheck",))
    [dispatch] = change.dispatches
    assert dispatch.essays == (EssayRef("e1", "fixed-1"),)
    assert [s.name for s in change.run.steps] == ["spellcheck", "nlp"]


def test_a_step_with_nothing_to_process_completes_unsatisfied_without_a_command() -> None:
    result = StepResult("spellcheck", True, 0, 0, 0, {})
    change = _start(BatchProgress(_batch(2), {"spellcheck": result}), CHAIN[1:], ("spellcheck",))
    assert change.dispatches == ()
    assert change.run.status is RunStatus.FAILED


def test_a_second_active_run_is_a_conflict() -> None:
    change = _start(BatchProgress(_batch(1), {}), CHAIN)
    with pytest.raises(RunConflict) as caught:
        _start(BatchProgress(_batch(1), {}, change.run), CHAIN)
    assert caught.value.active_run_id == "r1"


def test_a_run_is_the_active_one_until_it_ends_and_never_ends_another() -> None:
    started = _start(BatchProgress(_batch(1), {}), CHAIN).run
    progress = with_run(BatchProgress(_batch(1), {}), started)
    assert progress.active_run == started
    assert (
        with_run(progress, dataclasses.replace(started, status=RunStatus.FAILED)).active_run is None
    )
    other = dataclasses.replace(started, run_id="r0", status=RunStatus.COMPLETED)
    assert with_run(progress, other).active_run == started


def test_a_repeated_completion_changes_nothing() -> None:
    change = _start(BatchProgress(_batch(2), {}), CHAIN)
    progress, first = _apply(
        BatchProgress(_batch(2), {}, change.run), _completion("spellcheck", ["e0", "e1"], 0), T0
    )
    assert first is not None
    repeat = _completion("spellcheck", ["e0", "e1"], 0)
    assert is_repeat(progress, repeat)
    assert complete_step(record_completion(progress, repeat).progress, repeat, T0) is None


@pytest.mark.parametrize(
    "completion",
    [
        StepCompletion("b1", "spellcheck", 1, 0, 2, True, (EssayRef("e0", ""),)),
        StepCompletion("b1", "spellcheck", 2, 0, 2, True, (EssayRef("e0", ""),)),
        StepCompletion("b1", "spellcheck", 2, 0, 2, True, (EssayRef("e0", ""), EssayRef("e0", ""))),
        StepCompletion("b1", "spellcheck", 1, 1, 2, True, (EssayRef("stranger", ""),)),
    ],
    ids=["counts-do-not-add-up", "essays-missing", "duplicate-essay", "stranger"],
)
def test_a_completion_that_breaks_the_contract_is_invalid(completion: StepCompletion) -> None:
    with pytest.raises(InvalidCompletion):
        record_completion(BatchProgress(_batch(2), {}), completion)


# --- properties ---------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[StepPlan], set[str], int]:
    """A dependency DAG in topological order, a dependency-closed set of pruned steps, essays."""
    n = draw(st.integers(1, 6))
    plans = []
    for i in range(n):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        plans.append(StepPlan(f"s{i}", "cmd", tuple(f"s{d}" for d in sorted(deps))))
    by_name = {p.name: p for p in plans}
    pruned: set[str] = set()
    for name in draw(st.sets(st.sampled_from([p.name for p in plans]))):
        stack = [name]
        while stack:
            step = stack.pop()
            if step not in pruned:
                pruned.add(step)
                stack.extend(by_name[step].depends_on)
    return plans, pruned, draw(st.integers(1, 8))


@settings(max_examples=300, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_a_run_always_ends_and_never_runs_a_step_before_its_dependencies(
    scenario: tuple[list[StepPlan], set[str], int], data: st.DataObject
) -> None:
    plans, pruned, essays = scenario
    batch = _batch(essays)
    results = {
        name: StepResult(name, True, essays, 0, essays, {e.essay_id: "" for e in batch.essays})
        for name in pruned
    }
    to_run = [p for p in plans if p.name not in pruned]
    change = _start(BatchProgress(batch, results), to_run, tuple(sorted(pruned)))
    progress = BatchProgress(batch, results, None if change.run.status.terminal else change.run)
    initial = dataclasses.replace(
        change.run,
        status=RunStatus.PENDING,
        finished_at=None,
        version=0,
        steps=tuple(
            dataclasses.replace(s, status=StepStatus.PENDING, total=0, essays=())
            if s.status is not StepStatus.SKIPPED_ALREADY_SATISFIED
            else s
            for s in change.run.steps
        ),
    )
    changes = [change]
    dispatched: list[str] = []
    sent: list[StepCompletion] = []
    for _ in range(len(plans) + 1):
        _check_dispatches(change, progress, dispatched)
        run = changes[-1].run
        if run.status.terminal:
            break
        waiting = [s for s in run.steps if s.status is StepStatus.DISPATCHED]
        assert waiting, "an active run must have a dispatched step"
        step = data.draw(st.sampled_from(waiting))
        ok = data.draw(st.sets(st.sampled_from(step.essays))) if step.essays else set()
        completion = _completion(
            step.name,
            sorted(ok),
            len(step.essays) - len(ok),
            data.draw(st.sampled_from([0.5, 1.0])),
        )
        redeliver = data.draw(st.booleans())
        if sent and redeliver:  # a redelivery of an earlier completion
            stale = data.draw(st.sampled_from(sent))
            _, none = _apply(progress, stale, T0)
            assert none is None
        sent.append(completion)
        progress, after = _apply(progress, completion, T0 + timedelta(seconds=len(sent)))
        assert after is not None
        change = after
        changes.append(after)
    final = changes[-1].run
    assert final.status.terminal, "the run did not end"
    assert sorted(dispatched) == sorted(set(dispatched)), "a step was dispatched twice"
    assert [c.summary is not None for c in changes].count(True) == 1
    failed = any(
        s.status in (StepStatus.UNSATISFIED, StepStatus.SKIPPED_DUE_TO_DEPENDENCY_FAILURE)
        for s in final.steps
    )
    if failed:
        assert final.status is RunStatus.FAILED
    elif any(s.failed for s in final.steps):
        assert final.status is RunStatus.COMPLETED_WITH_FAILURES
    else:
        assert final.status is RunStatus.COMPLETED
    transitions = [t for c in changes for t in c.transitions]
    assert [t.seq for t in transitions] == list(range(1, len(transitions) + 1))
    replayed = initial if transitions else final  # all pruned: created finished, no transition
    for transition in transitions:
        replayed = apply_transition(replayed, transition)
    assert _shape(replayed) == _shape(final)


def _check_dispatches(change: RunChange, progress: BatchProgress, dispatched: list[str]) -> None:
    run = change.run
    for dispatch in change.dispatches:
        dispatched.append(dispatch.step)
        step = run.step(dispatch.step)
        assert step is not None
        for dep in step.depends_on:
            dep_step = run.step(dep)
            assert dep_step is not None
            assert dep_step.status in SATISFIED_LIKE, f"{step.name} dispatched before {dep}"
            succeeded = progress.results[dep].succeeded_essays
            assert all(e.essay_id in succeeded for e in dispatch.essays)


def _shape(run: PipelineRun) -> tuple[object, ...]:
    return (
        run.status,
        run.finished_at,
        run.version,
        tuple((s.name, s.status, s.succeeded, s.failed, s.total) for s in run.steps),
    )
