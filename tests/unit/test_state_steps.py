"""The step table: dependency order and status derivation from counts."""

from __future__ import annotations

import pytest

from conductor_server.domain.model import StepDefinition, StepState, StepStatus
from conductor_server.state.steps import StepCounts, StepTable
from tests.unit.test_state_contract import STEPS


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
        4,
        {
            "spellcheck": StepCounts(3, 1, 4),  # unsatisfied: needs all four
            "triage": StepCounts(1, 0, None),  # a root without a total expects every essay
        },
    )
    assert states == (
        StepState("spellcheck", 3, 1, 4, StepStatus.UNSATISFIED),
        StepState("nlp", 0, 0, 0, StepStatus.BLOCKED),
        StepState("cj_assessment", 0, 0, 0, StepStatus.BLOCKED),
        StepState("ai_feedback", 0, 0, 0, StepStatus.BLOCKED),  # blocked through its dependencies
        StepState("triage", 1, 0, 4, StepStatus.IN_PROGRESS),
        StepState("review", 0, 0, 0, StepStatus.WAITING),
    )
