"""The counting rule: per-essay step outcomes of one batch, each counted once, completing steps.

Every mode counts with this module and nothing else. The in-memory store keeps one
``BatchTally`` per batch holding every outcome; the PostgreSQL store builds one per call from the
rows the call touches (the batch's step counts, and the outcomes of the essays its records name),
applies the records, and writes back what changed, under the batch's row lock.

Per (batch, step) a tally keeps a ``StepCount``: ``succeeded``, ``failed``, ``total`` (the step's
expected essays, once known) and ``eligible`` (the essays that have succeeded in every dependency
so far; for a root step, every essay of the batch). The rules:

- An outcome is *expected* when its essay is in the batch, its step's total is known, and the
  essay succeeded in every dependency of the step; otherwise it is NOT_EXPECTED.
- An expected outcome is counted once per (step, essay): the same outcome again is a DUPLICATE,
  the other outcome a CONFLICT (the first one stands).
- Counting a success in step S adds one to the ``eligible`` of each dependant of S whose total is
  not known yet, once the essay has succeeded in all of that dependant's dependencies.
- A step is complete when ``succeeded + failed == total``. Then each of its dependants whose
  dependencies are all SATISFIED becomes ready: its total is its ``eligible``. A dependant that
  expects no essay at all completes at once, unsatisfied: it *cascades* from the outcome that
  completed its dependency.

Statuses follow from the counts (``StepTable.derive``): a step whose total is not known is
BLOCKED when a dependency is UNSATISFIED or BLOCKED, else WAITING.

**Attempts.** Each outcome belongs to an attempt of its step (a run's retry is a new attempt).
An essay is *open* at one attempt per step: the step's own (1, or the attempt whose completion
made the step ready), or the one a retry reopened it at. An outcome of the open attempt counts
as above (within an attempt the first outcome wins); one of an earlier attempt is SUPERSEDED
and changes nothing; one of a later attempt is NOT_EXPECTED (the essay was not dispatched in
it). ``reopen`` starts a new attempt for essays that failed or never reported: a failure leaves
the counts, and the essay's next outcome (of the new attempt) counts instead. When an essay
newly succeeds in every dependency of a dependant that is already ready (a retry turned a
failure into a success), the dependant expects it too, open at the same attempt.

**Timeouts.** ``expire`` records TIMED_OUT (a failure) for every essay of a step still without
an outcome of its open attempt; a late outcome of that attempt is then LATE and changes
nothing.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Collection, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from conductor_server.domain.model import (
    Outcome,
    StepDefinition,
    StepState,
    StepStatus,
    counted_status,
)

_STOPPED = (StepStatus.UNSATISFIED, StepStatus.BLOCKED)


@dataclass(slots=True)
class StepCount:
    """Counts of one step of one batch; ``total`` is None while the expected essays are unknown."""

    succeeded: int = 0
    failed: int = 0
    total: int | None = None
    eligible: int = 0
    attempt: int = 1  # at which its essays are open unless opened at another one


class Verdict(StrEnum):
    """What happened to one recorded outcome."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    NOT_EXPECTED = "not_expected"
    SUPERSEDED = "superseded"  # of an attempt a later one replaced: nothing changes
    LATE = "late"  # of an attempt whose essay timed out: nothing changes


@dataclass(frozen=True, slots=True)
class Entry:
    """The answer for one outcome. ``previous``: the outcome that stands, for a CONFLICT;
    ``completed``: this outcome completed its step; ``cascaded``: dependants that completed with
    it because they expect no essay."""

    verdict: Verdict
    previous: Outcome | None = None
    completed: bool = False
    cascaded: tuple[str, ...] = ()


_NOT_EXPECTED = Entry(Verdict.NOT_EXPECTED)
_DUPLICATE = Entry(Verdict.DUPLICATE)
_RECORDED = Entry(Verdict.RECORDED)
_SUPERSEDED = Entry(Verdict.SUPERSEDED)
_LATE = Entry(Verdict.LATE)


class CannotReopen(ValueError):
    """A retry asked to reopen an essay that succeeded, is not expected, or is open at a later
    attempt already."""

    def __init__(self, step: str, essay_id: str, reason: str) -> None:
        super().__init__(f"step {step!r}, essay {essay_id!r}: {reason}")
        self.step = step
        self.essay_id = essay_id
        self.reason = reason


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
        self.depends_on: dict[str, tuple[str, ...]] = {
            name: definition.depends_on for name, definition in self.definitions.items()
        }

    def __contains__(self, name: object) -> bool:
        return name in self.definitions

    def __iter__(self) -> Iterator[str]:
        return iter(self.order)

    def __getitem__(self, name: str) -> StepDefinition:
        return self.definitions[name]

    def initial_counts(self, essay_count: int) -> dict[str, StepCount]:
        """The counts of a newly registered batch: root steps expect every essay."""
        return {
            name: StepCount(total=essay_count, eligible=essay_count)
            if not self.definitions[name].depends_on
            else StepCount()
            for name in self.order
        }

    def state(self, name: str, count: StepCount) -> StepState:
        """The state of a step whose total is known."""
        assert count.total is not None
        status = counted_status(
            count.succeeded, count.failed, count.total, self.definitions[name].min_success_ratio
        )
        return StepState(name, count.succeeded, count.failed, count.total, status)

    def derive(self, counts: Mapping[str, StepCount]) -> tuple[StepState, ...]:
        """Every step's state, in dependency order, from a batch's counts."""
        states: dict[str, StepState] = {}
        for name in self.order:
            count = counts.get(name) or StepCount()
            if count.total is not None:
                states[name] = self.state(name, count)
                continue
            stopped = any(states[d].status in _STOPPED for d in self.definitions[name].depends_on)
            states[name] = StepState(
                name, 0, 0, 0, StepStatus.BLOCKED if stopped else StepStatus.WAITING
            )
        return tuple(states.values())


@dataclass(slots=True)
class BatchTally:
    """One batch's counts, and the outcomes of the essays it knows.

    ``outcomes`` maps essay -> step -> outcome for every essay the tally may be asked about;
    ``members`` holds (at least) those of them that are in the batch; ``opened`` maps essay ->
    step -> attempt for the essays open at another attempt than their step's. ``changed``
    collects the steps whose counts moved since it was made, ``reopened`` the (essay, step)
    whose outcome was cleared or that were opened at a new attempt (what the PostgreSQL store
    writes back).
    """

    table: StepTable
    counts: dict[str, StepCount]
    outcomes: dict[str, dict[str, Outcome]]
    members: Container[str]
    opened: dict[str, dict[str, int]] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    reopened: dict[tuple[str, str], int] = field(default_factory=dict)  # -> attempt
    _derived: tuple[StepState, ...] | None = None  # states(), until the counts move

    def record(self, step: str, essay_id: str, outcome: Outcome, attempt: int = 1) -> Entry:
        """Count one outcome of a step of the table (the caller checks the step exists)."""
        count = self.counts[step]
        if count.total is None or essay_id not in self.members:
            return _NOT_EXPECTED
        known = self.outcomes.setdefault(essay_id, {})
        if not _succeeded_in_all(known, self.table.depends_on[step]):
            return _NOT_EXPECTED
        open_at = self.open_attempt(step, essay_id)
        if attempt != open_at:
            return _SUPERSEDED if attempt < open_at else _NOT_EXPECTED
        previous = known.get(step)
        if previous is not None:
            if previous is outcome:
                return _DUPLICATE
            if previous is Outcome.TIMED_OUT:
                return _LATE
            return Entry(Verdict.CONFLICT, previous=previous)
        known[step] = outcome
        self.changed.add(step)
        self._derived = None
        if outcome is Outcome.SUCCEEDED:
            count.succeeded += 1
            self._count_eligible(step, known, attempt)
        else:
            count.failed += 1
        if count.succeeded + count.failed < count.total:
            return _RECORDED
        return Entry(Verdict.RECORDED, completed=True, cascaded=self._make_ready(step, attempt))

    def open_attempt(self, step: str, essay_id: str) -> int:
        """The attempt at which the essay's outcome of ``step`` is expected (or was counted)."""
        return self.opened.get(essay_id, {}).get(step) or self.counts[step].attempt

    def reopen(self, step: str, attempt: int, essay_ids: Iterable[str]) -> None:
        """Open essays of ``step`` at ``attempt``: ones that failed (their failure leaves the
        counts) or that never reported. ``CannotReopen`` (nothing changed) otherwise."""
        count = self.counts[step]
        chosen = list(dict.fromkeys(essay_ids))
        for essay_id in chosen:
            known = self.outcomes.get(essay_id, {})
            if count.total is None or essay_id not in self.members:
                raise CannotReopen(step, essay_id, "the step does not expect it")
            if not _succeeded_in_all(known, self.table.depends_on[step]):
                raise CannotReopen(step, essay_id, "the step does not expect it")
            if known.get(step) is Outcome.SUCCEEDED:
                raise CannotReopen(step, essay_id, "it succeeded")
            if self.open_attempt(step, essay_id) >= attempt:
                raise CannotReopen(step, essay_id, f"it is open at attempt {attempt} or later")
        for essay_id in chosen:
            if self.outcomes.get(essay_id, {}).pop(step, None) is not None:
                count.failed -= 1
            self.opened.setdefault(essay_id, {})[step] = attempt
            self.reopened[essay_id, step] = attempt
        if chosen:
            self.changed.add(step)
            self._derived = None

    def missing(self, step: str, attempt: int, essay_ids: Iterable[str]) -> list[str]:
        """Of ``essay_ids`` (every essay of the batch, in order), those ``step`` still expects an
        outcome from at ``attempt``."""
        count = self.counts[step]
        if count.total is None:
            return []
        deps = self.table.depends_on[step]
        return [
            essay_id
            for essay_id in essay_ids
            if step not in self.outcomes.get(essay_id, {})
            and _succeeded_in_all(self.outcomes.get(essay_id, {}), deps)
            and self.open_attempt(step, essay_id) == attempt
        ]

    def state(self, step: str) -> StepState:
        """The state of ``step`` now (WAITING or BLOCKED while its total is unknown)."""
        count = self.counts[step]
        if count.total is not None:
            return self.table.state(step, count)
        return next(s for s in self.states() if s.step == step)

    def states(self) -> tuple[StepState, ...]:
        if self._derived is None:
            self._derived = self.table.derive(self.counts)
        return self._derived

    def _count_eligible(self, step: str, known: Mapping[str, Outcome], attempt: int) -> None:
        for name in self.table.dependants[step]:
            dependant = self.counts[name]
            if not _succeeded_in_all(known, self.table.depends_on[name]):
                continue
            dependant.eligible += 1
            self.changed.add(name)
            if dependant.total is not None:  # ready already: a retry made the essay eligible
                dependant.total += 1
                essay_id = next(e for e, o in self.outcomes.items() if o is known)
                self.opened.setdefault(essay_id, {})[name] = attempt
                self.reopened[essay_id, name] = attempt

    def _make_ready(self, step: str, attempt: int) -> tuple[str, ...]:
        """Fix the totals of the dependants of ``step`` that are ready now (open at ``attempt``);
        return those that completed at once because they expect no essay."""
        cascaded: list[str] = []
        for name in self.table.dependants[step]:
            dependant = self.counts[name]
            if dependant.total is not None:
                continue
            if all(self._satisfied(d) for d in self.table[name].depends_on):
                dependant.total = dependant.eligible
                dependant.attempt = attempt
                self.changed.add(name)
                if dependant.total == 0:
                    cascaded.append(name)
        return tuple(cascaded)

    def _satisfied(self, step: str) -> bool:
        count = self.counts[step]
        return count.total is not None and self.table.state(step, count).status is (
            StepStatus.SATISFIED
        )


_IS_SUCCEEDED = functools.partial(operator.is_, Outcome.SUCCEEDED)


def _succeeded_in_all(known: Mapping[str, Outcome], steps: tuple[str, ...]) -> bool:
    """Whether the essay whose outcomes are ``known`` succeeded in every one of ``steps``.

    Written with ``map`` so that the loop runs in C: it runs for every counted outcome.
    """
    return all(map(_IS_SUCCEEDED, map(known.get, steps)))


def replay(
    table: StepTable,
    essay_ids: Collection[str],
    outcomes: Mapping[str, Mapping[str, Outcome]],
) -> BatchTally:
    """A tally of a batch's recorded outcomes (essay -> step -> outcome), counted step by step
    in dependency order; ``ValueError`` if one of them could not have been recorded."""
    tally = BatchTally(table, table.initial_counts(len(essay_ids)), {}, essay_ids)
    for step in table:
        for essay_id, by_step in outcomes.items():
            outcome = by_step.get(step)
            if outcome is None:
                continue
            entry = tally.record(step, essay_id, outcome)
            if entry.verdict is not Verdict.RECORDED:
                raise ValueError(f"outcome {step}/{essay_id} is {entry.verdict.value} on replay")
    return tally


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
        ordered.append(ready[0])
        placed.add(ready[0])
        remaining.remove(ready[0])
    return tuple(ordered)
