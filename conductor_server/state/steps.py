"""The global step table as the state stores use it: dependency order, dependants, statuses.

Every backend keeps, per batch and step, ``StepCounts``: succeeded and failed counts and the
``total`` of expected essays once it is known (a root step knows it at registration; a dependant
when its last dependency completes satisfied). ``StepTable.derive`` turns counts into
``StepState`` values with the rules of ``conductor_server.domain.model``, so every backend reports
the same statuses for the same counts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from conductor_server.domain.model import StepDefinition, StepState, StepStatus, counted_status

_STOPPED = (StepStatus.UNSATISFIED, StepStatus.BLOCKED)


@dataclass(frozen=True, slots=True)
class StepCounts:
    """Counts of one step of one batch; ``total`` is None while the expected essays are unknown."""

    succeeded: int = 0
    failed: int = 0
    total: int | None = None


class StepTable:
    """Step definitions in dependency order (ties by declaration order) with their dependants."""

    def __init__(self, steps: Mapping[str, StepDefinition]) -> None:
        self.definitions: dict[str, StepDefinition] = dict(steps)
        self.order: tuple[str, ...] = _dependency_order(self.definitions)
        dependants: dict[str, list[str]] = {name: [] for name in self.order}
        for name in self.order:
            for dep in self.definitions[name].depends_on:
                dependants[dep].append(name)
        self.dependants: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in dependants.items()}

    def __contains__(self, name: object) -> bool:
        return name in self.definitions

    def __iter__(self) -> Iterator[str]:
        return iter(self.order)

    def __getitem__(self, name: str) -> StepDefinition:
        return self.definitions[name]

    def derive(self, essay_count: int, counts: Mapping[str, StepCounts]) -> tuple[StepState, ...]:
        """Every step's state, in dependency order, from the counts a backend holds.

        A root step without counts expects every essay. A dependant whose total is unknown is
        BLOCKED if a dependency is UNSATISFIED or BLOCKED and WAITING otherwise.
        """
        states: dict[str, StepState] = {}
        for name in self.order:
            definition = self.definitions[name]
            known = counts.get(name, StepCounts())
            total = known.total
            if total is None and not definition.depends_on:
                total = essay_count
            if total is not None:
                status = counted_status(
                    known.succeeded, known.failed, total, definition.min_success_ratio
                )
                states[name] = StepState(name, known.succeeded, known.failed, total, status)
                continue
            stopped = any(states[dep].status in _STOPPED for dep in definition.depends_on)
            status = StepStatus.BLOCKED if stopped else StepStatus.WAITING
            states[name] = StepState(name, 0, 0, 0, status)
        return tuple(states.values())


def counted_state(definition: StepDefinition, succeeded: int, failed: int, total: int) -> StepState:
    """The state of a step whose expected essays are known."""
    status = counted_status(succeeded, failed, total, definition.min_success_ratio)
    return StepState(definition.name, succeeded, failed, total, status)


def _dependency_order(steps: Mapping[str, StepDefinition]) -> tuple[str, ...]:
    """Dependencies first, ties broken by declaration order; ValueError on a bad graph."""
    for definition in steps.values():
        for dep in definition.depends_on:
            if dep not in steps:
                raise ValueError(f"step {definition.name!r} depends on unknown step {dep!r}")
    ordered: list[str] = []
    placed: set[str] = set()
    remaining = list(steps)
    while remaining:
        ready = [n for n in remaining if all(d in placed for d in steps[n].depends_on)]
        if not ready:
            raise ValueError(f"dependency cycle among steps {sorted(remaining)}")
        first = ready[0]
        ordered.append(first)
        placed.add(first)
        remaining.remove(first)
    return tuple(ordered)
