"""Resolving the shipped pipelines: order, pruning, gates, prerequisites, versions."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conductor_server.domain.catalog import PipelineCatalog
from conductor_server.domain.errors import (
    PreconditionFailed,
    UnknownStep,
    UnknownTarget,
    Violation,
    ViolationKind,
)
from conductor_server.domain.loader import parse_catalog
from conductor_server.domain.model import StepDefinition, StepState, StepStatus
from conductor_server.domain.resolution import PruneReason, check_prerequisites, resolve
from mesh.events.topics import COMMAND_KINDS
from pipelines import default_definitions

PROMPT = frozenset({"prompt_attached"})
NO_FLAGS: frozenset[str] = frozenset()


@pytest.fixture(scope="module")
def catalog() -> PipelineCatalog:
    source = default_definitions()
    return parse_catalog(source.read_text(encoding="utf-8"), str(source), set(COMMAND_KINDS))


def state(step: str, status: StepStatus, succeeded: int = 10, failed: int = 0) -> StepState:
    return StepState(step, succeeded, failed, succeeded + failed, status)


def names(steps: tuple[StepDefinition, ...]) -> list[str]:
    return [step.name for step in steps]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("spellcheck", ["spellcheck"]),
        ("nlp", ["spellcheck", "nlp"]),
        ("cj_assessment", ["spellcheck", "cj_assessment"]),
        ("ai_feedback", ["spellcheck", "nlp", "ai_feedback"]),
        ("comprehensive", ["spellcheck", "nlp", "cj_assessment", "ai_feedback"]),
    ],
)
def test_every_pipeline_resolves_in_stable_topological_order(
    catalog: PipelineCatalog, target: str, expected: list[str]
) -> None:
    resolution = resolve(catalog, target, {}, PROMPT)
    assert names(resolution.steps) == expected
    assert resolution.pruned == ()
    assert resolution.version == catalog.pipeline_versions[target]


def test_a_plain_step_is_a_target_and_needs_no_prompt(catalog: PipelineCatalog) -> None:
    resolution = resolve(catalog, "spellcheck", {}, NO_FLAGS)
    assert names(resolution.steps) == ["spellcheck"]
    assert resolution.steps[0] == catalog.step("spellcheck")


def test_a_step_target_resolves_to_its_dependency_closure() -> None:
    catalog = parse_catalog(
        textwrap.dedent("""
            pipelines:
              everything:
                steps:
                  - {name: a, service: w, command: spellcheck}
                  - {name: b, service: w, command: nlp, depends_on: [a]}
                  - {name: c, service: w, command: nlp}
                  - {name: d, service: w, command: nlp, depends_on: [c, a]}
        """),
        "steps.yaml",
        set(COMMAND_KINDS),
    )
    assert names(resolve(catalog, "d", {}, NO_FLAGS).steps) == ["a", "c", "d"]
    assert names(resolve(catalog, "everything", {}, NO_FLAGS).steps) == ["a", "b", "c", "d"]
    assert resolve(catalog, "d", {}, NO_FLAGS).version != catalog.pipeline_versions["everything"]


def test_an_unknown_target_is_not_found(catalog: PipelineCatalog) -> None:
    with pytest.raises(UnknownTarget) as caught:
        resolve(catalog, "student_matching", {}, PROMPT)
    assert caught.value.name == "student_matching"
    assert caught.value.retriable is False


def test_satisfied_steps_are_pruned_with_a_reason_and_the_order_kept(
    catalog: PipelineCatalog,
) -> None:
    states = {
        "spellcheck": state("spellcheck", StepStatus.SATISFIED, failed=1),
        "nlp": state("nlp", StepStatus.IN_PROGRESS),
    }
    resolution = resolve(catalog, "comprehensive", states, PROMPT)
    assert names(resolution.steps) == ["nlp", "cj_assessment", "ai_feedback"]
    assert [(p.step.name, p.reason) for p in resolution.pruned] == [
        ("spellcheck", PruneReason.ALREADY_SATISFIED)
    ]
    assert resolution.version == catalog.pipeline_versions["comprehensive"]


def test_a_step_completed_unsatisfied_cannot_run_again(catalog: PipelineCatalog) -> None:
    """Outcomes count once per essay: a second run of the step would wait forever."""
    states = {
        "spellcheck": state("spellcheck", StepStatus.SATISFIED),
        "cj_assessment": state("cj_assessment", StepStatus.UNSATISFIED, 1, 9),
    }
    with pytest.raises(PreconditionFailed) as caught:
        resolve(catalog, "comprehensive", states, frozenset())  # the prompt is missing too
    kinds = [(v.kind, v.subject) for v in caught.value.violations]
    assert kinds == [(ViolationKind.STEP, "cj_assessment"), (ViolationKind.FLAG, "prompt_attached")]
    assert (
        "completed unsatisfied (1 of 10 essays succeeded)" in caught.value.violations[0].description
    )
    # a target that does not need the step still resolves
    assert names(resolve(catalog, "nlp", states, PROMPT).steps) == ["nlp"]


def test_a_fully_satisfied_batch_resolves_to_no_steps(catalog: PipelineCatalog) -> None:
    states = {name: state(name, StepStatus.SATISFIED) for name in catalog.steps}
    resolution = resolve(catalog, "comprehensive", states, NO_FLAGS)  # no gate: nothing runs
    assert resolution.steps == ()
    assert [p.step.name for p in resolution.pruned] == [
        "spellcheck",
        "nlp",
        "cj_assessment",
        "ai_feedback",
    ]


def test_a_missing_prompt_names_the_flag_and_every_step_needing_it(
    catalog: PipelineCatalog,
) -> None:
    with pytest.raises(PreconditionFailed) as caught:
        resolve(catalog, "comprehensive", {}, NO_FLAGS)
    assert caught.value.target == "comprehensive"
    assert caught.value.violations == (
        Violation(
            ViolationKind.FLAG,
            "prompt_attached",
            "batch flag 'prompt_attached' is not set (required by nlp, cj_assessment, ai_feedback)",
            ("nlp", "cj_assessment", "ai_feedback"),
        ),
    )


def test_gates_are_checked_only_for_steps_that_would_run(catalog: PipelineCatalog) -> None:
    states = {
        "spellcheck": state("spellcheck", StepStatus.SATISFIED),
        "nlp": state("nlp", StepStatus.SATISFIED),
    }
    resolution = resolve(catalog, "nlp", states, NO_FLAGS)
    assert resolution.steps == ()
    with pytest.raises(PreconditionFailed) as caught:
        resolve(catalog, "ai_feedback", states, NO_FLAGS)
    [violation] = caught.value.violations
    assert violation.required_by == ("ai_feedback",)


def test_every_unmet_flag_is_reported() -> None:
    catalog = parse_catalog(
        textwrap.dedent("""
            pipelines:
              gated:
                steps:
                  - {name: a, service: w, command: nlp, requires: [x, y]}
                  - {name: b, service: w, command: nlp, requires: [z, x], depends_on: [a]}
        """),
        "gated.yaml",
        set(COMMAND_KINDS),
    )
    with pytest.raises(PreconditionFailed) as caught:
        resolve(catalog, "gated", {}, {"y"})
    found = [(v.kind, v.subject, v.required_by) for v in caught.value.violations]
    assert found == [
        (ViolationKind.FLAG, "x", ("a", "b")),
        (ViolationKind.FLAG, "z", ("b",)),
    ]


def test_prerequisites_name_every_unsatisfied_step_and_unmet_flag(
    catalog: PipelineCatalog,
) -> None:
    states = {
        "spellcheck": state("spellcheck", StepStatus.SATISFIED),
        "nlp": state("nlp", StepStatus.IN_PROGRESS),
    }
    with pytest.raises(PreconditionFailed) as caught:
        check_prerequisites(catalog, "ai_feedback", states, NO_FLAGS)
    found = [(v.kind, v.subject) for v in caught.value.violations]
    assert found == [(ViolationKind.STEP, "nlp"), (ViolationKind.FLAG, "prompt_attached")]
    assert "in_progress" in caught.value.violations[0].description


def test_prerequisites_met_return_the_step(catalog: PipelineCatalog) -> None:
    states = {
        "spellcheck": state("spellcheck", StepStatus.SATISFIED),
        "nlp": state("nlp", StepStatus.SATISFIED),
    }
    step = check_prerequisites(catalog, "ai_feedback", states, PROMPT)
    assert step == catalog.step("ai_feedback")
    assert check_prerequisites(catalog, "spellcheck", {}, NO_FLAGS).name == "spellcheck"


def test_a_step_never_seen_is_not_satisfied(catalog: PipelineCatalog) -> None:
    with pytest.raises(PreconditionFailed) as caught:
        check_prerequisites(catalog, "nlp", {}, PROMPT)
    [violation] = caught.value.violations
    assert (violation.subject, violation.description) == (
        "spellcheck",
        "step 'spellcheck' is not_started, not satisfied",
    )


def test_prerequisites_of_a_pipeline_name_are_not_found(catalog: PipelineCatalog) -> None:
    with pytest.raises(UnknownStep):
        check_prerequisites(catalog, "comprehensive", {}, PROMPT)


_ORDER_SCRIPT = """
import json, random
from conductor_server.domain.loader import parse_catalog
from mesh.events.topics import COMMAND_KINDS
rnd = random.Random(7)
steps = []
for n in range(60):
    deps = rnd.sample(range(n), min(n, 2))
    steps.append({"name": f"s{n}", "service": "w", "command": "nlp",
                  "depends_on": [f"s{d}" for d in deps]})
rnd.shuffle(steps)
text = json.dumps({"pipelines": {"all": {"steps": steps}}})
catalog = parse_catalog(text, "x", set(COMMAND_KINDS))
print([s.name for s in catalog.subgraph("all").steps], catalog.version)
"""


def test_the_order_does_not_depend_on_the_hash_seed() -> None:
    outputs = set()
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _ORDER_SCRIPT], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout)
    assert len(outputs) == 1
