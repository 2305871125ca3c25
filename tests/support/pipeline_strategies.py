"""Hypothesis strategies for pipeline definitions, and a model batch that derives step states.

Graphs are lists of ``StepDefinition`` in declaration order, steps named ``s<n>``; ``document``
turns them into definition YAML with one pipeline holding every step.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence

from hypothesis import strategies as st

from conductor_server.domain.catalog import PipelineCatalog
from conductor_server.domain.loader import parse_catalog
from conductor_server.domain.model import (
    Outcome,
    StepDefinition,
    StepState,
    StepStatus,
    counted_status,
    expected_essays,
)
from mesh.events.topics import COMMAND_KINDS

COMMANDS = frozenset(COMMAND_KINDS)
FLAGS = ("prompt_attached", "class_linked")
RATIOS = st.sampled_from([0.25, 0.5, 0.75, 0.9, 1.0])
TIMEOUTS = st.none() | st.sampled_from([0.5, 60.0, 900.0, 1800.0, 604800.0])


def _step(
    node: int,
    deps: Iterable[int],
    requires: Sequence[str],
    ratio: float,
    timeout: float | None = None,
    produces_text: bool = False,
) -> StepDefinition:
    return StepDefinition(
        name=f"s{node}",
        service="worker",
        command="nlp",
        depends_on=tuple(f"s{dep}" for dep in deps),
        requires=tuple(requires),
        min_success_ratio=ratio,
        timeout_seconds=timeout,
        produces_text=produces_text,
    )


@st.composite
def dags(draw: st.DrawFn, max_steps: int = 10) -> list[StepDefinition]:
    """A random acyclic graph (up to 3 dependencies a step), declared in a random order."""
    size = draw(st.integers(1, max_steps))
    steps = []
    for node in range(size):
        deps = draw(st.lists(st.integers(0, node - 1), unique=True, max_size=3)) if node else []
        requires = draw(st.lists(st.sampled_from(FLAGS), unique=True, max_size=1))
        timeout, text = draw(TIMEOUTS), draw(st.booleans())
        steps.append(_step(node, deps, requires, draw(RATIOS), timeout, text))
    return list(draw(st.permutations(steps)))


@st.composite
def graphs(draw: st.DrawFn, max_steps: int = 8) -> list[StepDefinition]:
    """A random graph that may have cycles (self-dependencies included)."""
    size = draw(st.integers(1, max_steps))
    return [
        _step(node, draw(st.lists(st.integers(0, size - 1), unique=True, max_size=3)), (), 1.0)
        for node in range(size)
    ]


def document(steps: Sequence[StepDefinition], pipeline: str = "everything") -> str:
    """Definition YAML with one pipeline ``pipeline`` holding ``steps`` in order."""
    raw_steps = [
        {
            "name": step.name,
            "service": step.service,
            "command": step.command,
            "depends_on": list(step.depends_on),
            "requires": list(step.requires),
            "min_success_ratio": step.min_success_ratio,
            "produces_text": step.produces_text,
        }
        | ({} if step.timeout_seconds is None else {"timeout_seconds": step.timeout_seconds})
        for step in steps
    ]
    data = {"pipelines": {pipeline: {"description": "generated", "steps": raw_steps}}}
    return json.dumps(data, indent=1)  # JSON is YAML, and much faster to write


def catalog_of(steps: Sequence[StepDefinition]) -> PipelineCatalog:
    return parse_catalog(document(steps), "generated.yaml", COMMANDS)


def statuses(names: Iterable[str]) -> st.SearchStrategy[dict[str, StepState]]:
    """Random step states (any status) for some of ``names``."""
    names = list(names)
    state = st.builds(
        lambda status, counts: StepState("", counts[0], counts[1], sum(counts), status),
        st.sampled_from(list(StepStatus)),
        st.tuples(st.integers(0, 5), st.integers(0, 5)),
    )
    return st.dictionaries(st.sampled_from(names), state, max_size=len(names)).map(
        lambda found: {
            name: StepState(name, s.succeeded, s.failed, s.total, s.status)
            for name, s in found.items()
        }
    )


class ModelBatch:
    """A batch whose step states are derived from recorded per-essay outcomes, as DESIGN §4."""

    def __init__(self, steps: Sequence[StepDefinition], essay_ids: Sequence[str]) -> None:
        self.steps = steps  # dependencies first
        self.essay_ids = tuple(essay_ids)
        self.outcomes: dict[tuple[str, str], Outcome] = {}

    def expected(self, step: StepDefinition, states: Mapping[str, StepState]) -> tuple[str, ...]:
        essays = expected_essays(step, self.essay_ids, states, self._succeeded())
        return essays if isinstance(essays, tuple) else ()

    def _succeeded(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for (step, essay), outcome in self.outcomes.items():
            if outcome is Outcome.SUCCEEDED:
                found.setdefault(step, set()).add(essay)
        return found

    def states(self) -> dict[str, StepState]:
        states: dict[str, StepState] = {}
        succeeded = self._succeeded()
        for step in self.steps:
            essays = expected_essays(step, self.essay_ids, states, succeeded)
            if isinstance(essays, StepStatus):
                states[step.name] = StepState(step.name, 0, 0, 0, essays)
                continue
            counted = [self.outcomes.get((step.name, essay)) for essay in essays]
            ok = counted.count(Outcome.SUCCEEDED)
            failed = counted.count(Outcome.FAILED)
            status = counted_status(ok, failed, len(essays), step.min_success_ratio)
            states[step.name] = StepState(step.name, ok, failed, len(essays), status)
        return states

    def work(self, step: StepDefinition, rnd: random.Random) -> None:
        """Record outcomes for a random non-empty share of the step's outstanding essays."""
        outstanding = [
            essay
            for essay in self.expected(step, self.states())
            if (step.name, essay) not in self.outcomes
        ]
        for essay in rnd.sample(outstanding, rnd.randint(1, len(outstanding))):
            outcome = Outcome.SUCCEEDED if rnd.random() < 0.8 else Outcome.FAILED
            self.outcomes[(step.name, essay)] = outcome
