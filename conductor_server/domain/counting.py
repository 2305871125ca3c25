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

**Attempts.** Each outcome carries the run and the attempt of the command it answers (a run's
first attempt is 1; ``RetryRun`` starts the next). An essay's mark per step is the (run,
attempt) of its counted outcome, or of the attempt a retry reopened it at; without a mark it is
attempt 1. An outcome of the same run as the mark but an earlier attempt is SUPERSEDED and
changes nothing; otherwise the rules above apply: within an attempt the first outcome counts.
``reopen`` starts a new attempt of a run for a step: every essay the step expects that failed,
timed out or never reported is marked with the new attempt and its failure no longer counts, so
the essay's next outcome (of that attempt) counts instead. Essays that succeeded are never
reopened. When an essay newly succeeds in every dependency of a dependant that is already ready
(a retry turned a failure into a success), the dependant expects it too: its total grows by one.

**Timeouts.** ``missing`` lists the essays a step still waits for; the store records each as
TIMED_OUT, a failure counted like any other. A later outcome for such an essay is LATE and
changes nothing (a retry reopens it).

**Epochs.** Counts only grow except when a reopen clears failures, and a complete step is only
incomplete again when a retry reopens it or it gains an essay. Each of those starts a new
*epoch* of the step (``StepCount.epoch``, from 1): the completion event of a step is one per
epoch, and the Redis mirror orders a step's counts by epoch first.
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
    timed_out: int = 0  # of the failures, those recorded because the step timed out
    epoch: int = 1


class Verdict(StrEnum):
    """What happened to one recorded outcome."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    NOT_EXPECTED = "not_expected"
    SUPERSEDED = "superseded"  # of an attempt a later one of the same run replaced
    LATE = "late"  # the essay timed out already


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
        return StepState(name, count.succeeded, count.failed, count.total, status, count.timed_out)

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


Mark = tuple[str, int]  # (run id, attempt)


@dataclass(slots=True)
class BatchTally:
    """One batch's counts, and the outcomes of the essays it knows.

    ``outcomes`` maps essay -> step -> outcome for every essay the tally may be asked about;
    ``members`` holds (at least) those of them that are in the batch; ``marks`` maps essay ->
    step -> (run, attempt) where that is not attempt 1. What the PostgreSQL store writes back:
    ``changed``, the steps whose counts moved since the tally was made; ``reopened``, the
    (essay, step) pairs a reopen cleared or marked.
    """

    table: StepTable
    counts: dict[str, StepCount]
    outcomes: dict[str, dict[str, Outcome]]
    members: Container[str]
    marks: dict[str, dict[str, Mark]] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    reopened: set[tuple[str, str]] = field(default_factory=set)
    _derived: tuple[StepState, ...] | None = None  # states(), until the counts move

    def record(
        self, step: str, essay_id: str, outcome: Outcome, run_id: str = "", attempt: int = 1
    ) -> Entry:
        """Count one outcome of a step of the table (the caller checks the step exists)."""
        count = self.counts[step]
        if count.total is None or essay_id not in self.members:
            return _NOT_EXPECTED
        known = self.outcomes.setdefault(essay_id, {})
        depends_on = self.table.depends_on[step]
        if depends_on and not _succeeded_in_all(known, depends_on):
            return _NOT_EXPECTED
        marks = self.marks.get(essay_id)
        mark = marks.get(step) if marks else None
        if mark is not None and mark[0] == run_id and attempt < mark[1]:
            return _SUPERSEDED
        previous = known.get(step)
        if previous is not None:
            if previous is Outcome.TIMED_OUT:
                return _LATE
            if previous is outcome:
                return _DUPLICATE
            return Entry(Verdict.CONFLICT, previous=previous)
        known[step] = outcome
        if attempt > 1:
            self.marks.setdefault(essay_id, {})[step] = (run_id, attempt)
        elif mark is not None:
            del self.marks[essay_id][step]
        self.changed.add(step)
        self._derived = None
        if outcome is Outcome.SUCCEEDED:
            count.succeeded += 1
            self._count_eligible(step, known)
        else:
            count.failed += 1
            if outcome is Outcome.TIMED_OUT:
                count.timed_out += 1
        if count.succeeded + count.failed < count.total:
            return _RECORDED
        return Entry(Verdict.RECORDED, completed=True, cascaded=self._make_ready(step))

    def mark(self, essay_id: str, step: str) -> Mark | None:
        """The (run, attempt) of the essay's outcome of ``step``, or of the attempt it is open
        at; None for attempt 1."""
        marks = self.marks.get(essay_id)
        return marks.get(step) if marks else None

    def expects(self, step: str, essay_id: str) -> bool:
        """Whether ``step`` expects an outcome of the essay (counted or not)."""
        return (
            self.counts[step].total is not None
            and essay_id in self.members
            and _succeeded_in_all(self.outcomes.get(essay_id, {}), self.table.depends_on[step])
        )

    def reopen(self, step: str, run_id: str, attempt: int, essay_ids: Iterable[str]) -> list[str]:
        """Open ``step`` at (``run_id``, ``attempt``) for each essay of ``essay_ids`` (the
        batch's, in order) that it expects and that failed, timed out or never reported;
        answer the essays open at that attempt, in order (a repeat answers the same ones)."""
        count = self.counts[step]
        if count.total is None:
            return []
        opened: list[str] = []
        cleared = False
        for essay_id in essay_ids:
            if not self.expects(step, essay_id):
                continue
            known = self.outcomes.setdefault(essay_id, {})
            previous = known.get(step)
            if previous is Outcome.SUCCEEDED:
                continue
            mark = self.mark(essay_id, step)
            if mark == (run_id, attempt) and previous is None:
                opened.append(essay_id)
                continue
            if mark is not None and mark[0] == run_id and mark[1] >= attempt:
                continue
            if previous is not None:
                del known[step]
                count.failed -= 1
                if previous is Outcome.TIMED_OUT:
                    count.timed_out -= 1
                cleared = True
            self.marks.setdefault(essay_id, {})[step] = (run_id, attempt)
            self.reopened.add((essay_id, step))
            opened.append(essay_id)
        if cleared:  # a complete step always has a failure to clear when it is reopened
            count.epoch += 1
        if opened:
            self.changed.add(step)
            self._derived = None
        return opened

    def missing(self, step: str, run_id: str, attempt: int, essay_ids: Iterable[str]) -> list[str]:
        """Of ``essay_ids`` (the batch's, in order), those ``step`` expects that have no outcome,
        leaving out the essays open at a later attempt of ``run_id``: what timing out
        (``run_id``, ``attempt``) records as TIMED_OUT."""
        if self.counts[step].total is None:
            return []
        waiting = []
        for essay_id in essay_ids:
            if not self.expects(step, essay_id) or step in self.outcomes.get(essay_id, {}):
                continue
            mark = self.mark(essay_id, step)
            if mark is None or mark[0] != run_id or mark[1] <= attempt:
                waiting.append(essay_id)
        return waiting

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

    def _count_eligible(self, step: str, known: Mapping[str, Outcome]) -> None:
        for name in self.table.dependants[step]:
            if not _succeeded_in_all(known, self.table.depends_on[name]):
                continue
            dependant = self.counts[name]
            dependant.eligible += 1
            self.changed.add(name)
            if dependant.total is not None:  # ready already: a retry made the essay eligible
                if dependant.succeeded + dependant.failed == dependant.total:
                    dependant.epoch += 1
                dependant.total += 1

    def _make_ready(self, step: str) -> tuple[str, ...]:
        """Fix the totals of the dependants of ``step`` that are ready now; return those that
        completed at once because they expect no essay."""
        cascaded: list[str] = []
        for name in self.table.dependants[step]:
            dependant = self.counts[name]
            if dependant.total is not None:
                continue
            if all(self._satisfied(d) for d in self.table[name].depends_on):
                dependant.total = dependant.eligible
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
