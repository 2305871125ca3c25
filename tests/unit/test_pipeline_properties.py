"""Properties of loading, ordering and pruning over random graphs."""

from __future__ import annotations

import graphlib
import itertools
from collections.abc import Mapping, Set
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conductor_server.domain.errors import (
    DefinitionError,
    IssueKind,
    PreconditionFailed,
    Violation,
    ViolationKind,
)
from conductor_server.domain.model import StepDefinition, StepState, StepStatus
from conductor_server.domain.resolution import Resolution, resolve
from tests.support.pipeline_strategies import (
    FLAGS,
    catalog_of,
    dags,
    graphs,
    statuses,
)


def _is_cyclic(steps: list[StepDefinition]) -> bool:
    sorter = graphlib.TopologicalSorter({step.name: step.depends_on for step in steps})
    try:
        sorter.prepare()
    except graphlib.CycleError:
        return True
    return False


def _reference_order(steps: list[StepDefinition], target: str) -> list[str]:
    """Quadratic and obviously right: repeatedly take the first-declared ready step."""
    table = {step.name: step for step in steps}
    needed: set[str] = set()
    stack = [step.name for step in steps] if target == "everything" else [target]
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack.extend(table[name].depends_on)
    order: list[str] = []
    while len(order) < len(needed):
        ready = next(
            step.name
            for step in steps
            if step.name in needed
            and step.name not in order
            and all(dep in order for dep in step.depends_on)
        )
        order.append(ready)
    return order


@given(graphs())
def test_the_loader_accepts_exactly_the_acyclic_graphs(steps: list[StepDefinition]) -> None:
    if not _is_cyclic(steps):
        assert len(catalog_of(steps).steps) == len(steps)
        return
    with pytest.raises(DefinitionError) as caught:
        catalog_of(steps)
    issues = caught.value.issues
    assert issues
    assert {issue.kind for issue in issues} == {IssueKind.CYCLE}
    deps = {step.name: step.depends_on for step in steps}
    for issue in issues:
        cycle = issue.cycle
        assert cycle[0] == cycle[-1] == issue.step
        assert len(set(cycle)) == len(cycle) - 1  # a simple cycle
        for step, dep in itertools.pairwise(cycle):
            assert dep in deps[step]  # every hop is a real dependency


@given(dags(), st.data())
def test_the_order_respects_every_edge_and_breaks_ties_by_declaration(
    steps: list[StepDefinition], data: st.DataObject
) -> None:
    catalog = catalog_of(steps)
    target = data.draw(st.sampled_from(["everything", *catalog.steps]))
    order = [step.name for step in catalog.subgraph(target).steps]
    assert order == _reference_order(steps, target)
    position = {name: index for index, name in enumerate(order)}
    for step in steps:
        if step.name in position:
            assert all(position[dep] < position[step.name] for dep in step.depends_on)


def resolved_or_refused(
    catalog: Any, target: str, states: Mapping[str, StepState], flags: Set[str]
) -> Resolution | tuple[Violation, ...]:
    """The resolution, or the violations of the refusal."""
    try:
        return resolve(catalog, target, states, flags)
    except PreconditionFailed as refused:
        return refused.violations


@given(dags(), st.data())
def test_resolution_ignores_mapping_and_set_order(
    steps: list[StepDefinition], data: st.DataObject
) -> None:
    catalog, again = catalog_of(steps), catalog_of(steps)
    states = data.draw(statuses(catalog.steps))
    shuffled = dict(data.draw(st.permutations(list(states.items()))))
    flags = set(FLAGS)
    reordered_flags = frozenset(reversed(FLAGS))
    first = resolved_or_refused(catalog, "everything", states, flags)
    assert resolved_or_refused(again, "everything", shuffled, reordered_flags) == first
    assert again.version == catalog.version


@given(dags(), st.data())
def test_pruning_removes_exactly_the_satisfied_steps_and_keeps_the_order(
    steps: list[StepDefinition], data: st.DataObject
) -> None:
    catalog = catalog_of(steps)
    target = data.draw(st.sampled_from(["everything", *catalog.steps]))
    states = data.draw(statuses(catalog.steps))
    full = [step.name for step in catalog.subgraph(target).steps]
    satisfied = {name for name, s in states.items() if s.status is StepStatus.SATISFIED}
    final = [n for n in full if n in states and states[n].status is StepStatus.UNSATISFIED]
    outcome = resolved_or_refused(catalog, target, states, set(FLAGS))
    if final:  # a step completed unsatisfied cannot run again: refused, naming each one
        assert isinstance(outcome, tuple)
        assert [(v.kind, v.subject) for v in outcome] == [(ViolationKind.STEP, n) for n in final]
        return
    assert isinstance(outcome, Resolution)
    kept = [step.name for step in outcome.steps]
    pruned = [p.step.name for p in outcome.pruned]
    assert kept == [name for name in full if name not in satisfied]
    assert pruned == [name for name in full if name in satisfied]
    assert outcome.version == catalog.subgraph(target).version


@given(dags())
def test_loading_keeps_every_field_of_every_step(steps: list[StepDefinition]) -> None:
    assert dict(catalog_of(steps).steps) == {step.name: step for step in steps}
