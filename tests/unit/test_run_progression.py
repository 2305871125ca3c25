"""Run progression over the shipped pipelines: dispatch, skip, and how runs end."""

from __future__ import annotations

import pytest

from conductor_server.domain.catalog import PipelineCatalog
from conductor_server.domain.loader import parse_catalog
from conductor_server.domain.model import StepDefinition, StepState, StepStatus
from conductor_server.domain.progression import RunOutcome, SkipReason, advance
from mesh.topics import COMMAND_KINDS
from pipelines import default_definitions

SATISFIED, UNSATISFIED = StepStatus.SATISFIED, StepStatus.UNSATISFIED


@pytest.fixture(scope="module")
def catalog() -> PipelineCatalog:
    source = default_definitions()
    return parse_catalog(source.read_text(encoding="utf-8"), str(source), set(COMMAND_KINDS))


def run_of(catalog: PipelineCatalog, target: str) -> tuple[StepDefinition, ...]:
    return catalog.subgraph(target).steps


def states(**found: tuple[StepStatus, int, int]) -> dict[str, StepState]:
    return {
        name: StepState(name, succeeded, failed, succeeded + failed, status)
        for name, (status, succeeded, failed) in found.items()
    }


def names(steps: tuple[StepDefinition, ...]) -> list[str]:
    return [step.name for step in steps]


def test_a_new_run_dispatches_its_roots(catalog: PipelineCatalog) -> None:
    progress = advance(run_of(catalog, "comprehensive"), {}, set())
    assert names(progress.dispatch) == ["spellcheck"]
    assert (progress.skipped, progress.outcome, progress.finished) == ((), None, False)


def test_parallel_branches_are_dispatched_together(catalog: PipelineCatalog) -> None:
    run = run_of(catalog, "comprehensive")
    progress = advance(run, states(spellcheck=(SATISFIED, 9, 1)), {"spellcheck"})
    assert names(progress.dispatch) == ["nlp", "cj_assessment"]


def test_a_step_waits_for_every_dependency(catalog: PipelineCatalog) -> None:
    run = run_of(catalog, "comprehensive")
    found = states(spellcheck=(SATISFIED, 10, 0), nlp=(StepStatus.IN_PROGRESS, 3, 0))
    progress = advance(run, found, {"spellcheck", "nlp", "cj_assessment"})
    assert progress.dispatch == ()
    assert progress.outcome is None


def test_an_unsatisfied_step_skips_its_dependants_transitively(catalog: PipelineCatalog) -> None:
    run = run_of(catalog, "comprehensive")
    progress = advance(run, states(spellcheck=(UNSATISFIED, 5, 5)), {"spellcheck"})
    assert progress.dispatch == ()
    assert [(s.step.name, s.blocked_by) for s in progress.skipped] == [
        ("nlp", "spellcheck"),
        ("cj_assessment", "spellcheck"),
        ("ai_feedback", "spellcheck"),
    ]
    assert {s.reason for s in progress.skipped} == {SkipReason.SKIPPED_DUE_TO_DEPENDENCY_FAILURE}
    assert progress.outcome is RunOutcome.FAILED


def test_a_failed_branch_waits_for_the_other_branch_before_failing(
    catalog: PipelineCatalog,
) -> None:
    run = run_of(catalog, "comprehensive")
    dispatched = {"spellcheck", "nlp", "cj_assessment"}
    found = states(
        spellcheck=(SATISFIED, 10, 0),
        nlp=(UNSATISFIED, 2, 8),
        cj_assessment=(StepStatus.IN_PROGRESS, 4, 0),
    )
    progress = advance(run, found, dispatched)
    assert [(s.step.name, s.blocked_by) for s in progress.skipped] == [("ai_feedback", "nlp")]
    assert progress.outcome is None
    found["cj_assessment"] = StepState("cj_assessment", 10, 0, 10, SATISFIED)
    assert advance(run, found, dispatched).outcome is RunOutcome.FAILED


def test_a_blocked_step_counts_as_failed(catalog: PipelineCatalog) -> None:
    found = states(spellcheck=(SATISFIED, 10, 0), nlp=(StepStatus.BLOCKED, 0, 0))
    progress = advance(run_of(catalog, "nlp"), found, {"spellcheck", "nlp"})
    assert progress.outcome is RunOutcome.FAILED


def test_all_satisfied_without_failures_completes(catalog: PipelineCatalog) -> None:
    run = run_of(catalog, "ai_feedback")
    found = {step.name: StepState(step.name, 10, 0, 10, SATISFIED) for step in run}
    progress = advance(run, found, set(found))
    assert (progress.dispatch, progress.outcome) == ((), RunOutcome.COMPLETED)


def test_all_satisfied_with_some_failures_completes_with_failures(
    catalog: PipelineCatalog,
) -> None:
    run = run_of(catalog, "ai_feedback")
    found = {step.name: StepState(step.name, 10, 0, 10, SATISFIED) for step in run}
    found["nlp"] = StepState("nlp", 9, 1, 10, SATISFIED)
    assert advance(run, found, set(found)).outcome is RunOutcome.COMPLETED_WITH_FAILURES


def test_a_satisfied_dependency_outside_the_run_counts(catalog: PipelineCatalog) -> None:
    run = (catalog.step("nlp"),)  # spellcheck was pruned
    progress = advance(run, states(spellcheck=(SATISFIED, 10, 0)), set())
    assert names(progress.dispatch) == ["nlp"]


def test_an_unsatisfied_dependency_outside_the_run_skips(catalog: PipelineCatalog) -> None:
    run = (catalog.step("nlp"),)
    progress = advance(run, states(spellcheck=(StepStatus.IN_PROGRESS, 1, 0)), set())
    assert [(s.step.name, s.blocked_by) for s in progress.skipped] == [("nlp", "spellcheck")]
    assert progress.outcome is RunOutcome.FAILED


def test_an_empty_run_is_complete_at_once() -> None:
    assert advance((), {}, set()).outcome is RunOutcome.COMPLETED


def test_steps_must_come_after_their_dependencies(catalog: PipelineCatalog) -> None:
    with pytest.raises(ValueError, match="before its dependency"):
        advance((catalog.step("nlp"), catalog.step("spellcheck")), {}, set())
