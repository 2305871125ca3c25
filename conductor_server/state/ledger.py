"""One batch's outcomes held in memory, with the completion rules applied as they arrive.

The ledger is the in-memory store's state and the reference the other backends follow: outcomes
are recorded once per (step, essay); a step's expected essays are fixed when it becomes ready (a
root step at registration, a dependant when its last dependency completes satisfied, from the
essays that succeeded in every dependency); a dependant that then expects no essays at all
completes at once (unsatisfied), *cascading* from the outcome that completed its dependency.
The Redis store also builds its image of a batch from a ledger replayed from PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from conductor_server.domain.model import (
    BatchRegistration,
    Outcome,
    StepState,
    StepStatus,
    expected_essays,
)
from conductor_server.state.errors import InvalidRegistration
from conductor_server.state.steps import StepCounts, StepTable, counted_state

log = logging.getLogger(__name__)


class Verdict(StrEnum):
    """What happened to one recorded outcome."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    NOT_EXPECTED = "not_expected"


@dataclass(frozen=True, slots=True)
class Entry:
    """The ledger's answer for one outcome: ``previous`` is set for a CONFLICT."""

    verdict: Verdict
    previous: Outcome | None = None
    completed: bool = False
    cascaded: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BatchSnapshot:
    """Everything a backend holds on a batch, to rebuild another backend from it.

    ``version`` counts registration changes (flags replaced); ``outcomes`` maps step -> essay ->
    outcome.
    """

    registration: BatchRegistration
    version: int = 1
    outcomes: Mapping[str, Mapping[str, Outcome]] = field(default_factory=dict)


class BatchLedger:
    """Outcomes, counts and expected essays of one batch."""

    def __init__(self, table: StepTable, registration: BatchRegistration) -> None:
        self.table = table
        self.registration = registration
        self.outcomes: dict[str, dict[str, Outcome]] = {name: {} for name in table}
        self.expected: dict[str, frozenset[str]] = {}
        self._counts: dict[str, list[int]] = {name: [0, 0] for name in table}
        self._states: tuple[StepState, ...] | None = None  # derived; dropped on every change
        self._materialize(table)

    @property
    def batch_id(self) -> str:
        return self.registration.batch_id

    def record(self, step: str, essay_id: str, outcome: Outcome) -> Entry:
        """Count one outcome of a known step (the caller checks the step exists)."""
        expected = self.expected.get(step)
        if expected is None or essay_id not in expected:
            return Entry(Verdict.NOT_EXPECTED)
        outcomes = self.outcomes[step]
        previous = outcomes.get(essay_id)
        if previous is not None:
            if previous is outcome:
                return Entry(Verdict.DUPLICATE)
            return Entry(Verdict.CONFLICT, previous=previous)
        outcomes[essay_id] = outcome
        self._states = None
        counts = self._counts[step]
        counts[0 if outcome is Outcome.SUCCEEDED else 1] += 1
        if counts[0] + counts[1] < len(expected):
            return Entry(Verdict.RECORDED)
        return Entry(
            Verdict.RECORDED,
            completed=True,
            cascaded=self._materialize(self.table.dependants[step]),
        )

    def counts(self, step: str) -> StepCounts:
        succeeded, failed = self._counts[step]
        expected = self.expected.get(step)
        return StepCounts(succeeded, failed, None if expected is None else len(expected))

    def state(self, step: str) -> StepState:
        """The state of a step whose expected essays are known."""
        succeeded, failed = self._counts[step]
        return counted_state(self.table[step], succeeded, failed, len(self.expected[step]))

    def states(self) -> tuple[StepState, ...]:
        """Every step's state; derived once per change of the counts or expected essays."""
        if self._states is None:
            counts = {name: self.counts(name) for name in self.table}
            self._states = self.table.derive(len(self.registration.essay_ids), counts)
        return self._states

    def _materialize(self, candidates: Iterable[str]) -> tuple[str, ...]:
        """Fix the expected essays of every candidate that became ready; return those that
        completed at once because they expect nothing."""
        wanted = set(candidates)
        completed: list[str] = []
        for name in self.table:
            if name not in wanted or name in self.expected:
                continue
            states = {state.step: state for state in self.states()}
            succeeded = {
                dep: {e for e, o in self.outcomes[dep].items() if o is Outcome.SUCCEEDED}
                for dep in self.table[name].depends_on
            }
            essays = expected_essays(
                self.table[name], self.registration.essay_ids, states, succeeded
            )
            if isinstance(essays, StepStatus):
                continue
            self.expected[name] = frozenset(essays)
            self._states = None
            if not essays:
                completed.append(name)
        return tuple(completed)


def check_registration(registration: BatchRegistration) -> None:
    """Raise ``InvalidRegistration`` unless the batch lists at least one essay, each once."""
    essays = registration.essay_ids
    if not essays:
        raise InvalidRegistration(registration.batch_id, "no essays")
    seen: set[str] = set()
    for essay in essays:
        if essay in seen:
            raise InvalidRegistration(registration.batch_id, f"essay {essay!r} listed twice")
        seen.add(essay)


def replay(table: StepTable, snapshot: BatchSnapshot) -> BatchLedger:
    """A ledger holding ``snapshot``'s outcomes, recorded step by step in dependency order."""
    ledger = BatchLedger(table, snapshot.registration)
    for step in snapshot.outcomes:
        if step not in table:
            log.warning("batch %s: dropping outcomes of unknown step %s", ledger.batch_id, step)
    for step in table:
        for essay_id, outcome in snapshot.outcomes.get(step, {}).items():
            entry = ledger.record(step, essay_id, outcome)
            if entry.verdict is not Verdict.RECORDED:
                raise ValueError(
                    f"batch {ledger.batch_id}: snapshot outcome {step}/{essay_id} is "
                    f"{entry.verdict.value} on replay"
                )
    return ledger
