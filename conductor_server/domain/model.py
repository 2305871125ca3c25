"""Core values of the conductor's domain: steps, pipelines, outcomes and step states.

A step's *expected essays* (its ``total``): for a step with no dependencies, every essay of the
batch; otherwise the essays that succeeded in every dependency, known once every dependency is
complete. A step is *complete* when ``succeeded + failed == total`` and *satisfied* when it is
complete and ``succeeded / total >= min_success_ratio``. A step with no expected essays is complete
and unsatisfied: there was nothing it could succeed on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple


class Outcome(StrEnum):
    """One essay's result in one step. TIMED_OUT is a failure the conductor records itself for
    an essay still without an outcome when its step's timeout expired."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


class StepStatus(StrEnum):
    """Lifecycle of one step of one batch (persisted by value)."""

    WAITING = "waiting"  # a dependency is not complete: expected essays unknown
    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    SATISFIED = "satisfied"
    UNSATISFIED = "unsatisfied"
    BLOCKED = "blocked"  # a dependency completed unsatisfied (or is blocked)


@dataclass(frozen=True, slots=True)
class StepDefinition:
    """One step as defined in the pipeline YAML; the same name means the same step everywhere.

    ``timeout_seconds``: how long after dispatch the step may take (None: no timeout).
    ``produces_text``: whether an essay's output of the step is its new text, which later steps
    read (spellcheck's corrected text) or only a result (an analysis).
    """

    name: str
    service: str
    command: str
    depends_on: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    min_success_ratio: float = 1.0
    timeout_seconds: float | None = None
    produces_text: bool = False


@dataclass(frozen=True, slots=True)
class PipelineDefinition:
    """A named target with its steps in declaration order."""

    name: str
    description: str
    steps: tuple[StepDefinition, ...]


class OutcomeRecord(NamedTuple):
    """One essay's outcome of one step, as reported by a worker (or TIMED_OUT, recorded by the
    conductor), for the command of ``run_id``'s ``attempt``.

    ``trace`` is opaque here: the trace context of the report (a W3C ``traceparent``), which the
    completion this record causes carries on.

    One is built per outcome on the consumer's hot path: a named tuple is as immutable as a
    frozen dataclass and a quarter of its cost to build.
    """

    batch_id: str
    step: str
    essay_id: str
    outcome: Outcome
    output_storage_id: str = ""
    event_id: str = ""
    run_id: str = ""
    attempt: int = 1
    error_code: str = ""
    error_message: str = ""
    trace: str = ""


TIMED_OUT_CODE = "TIMED_OUT"  # the error code of an outcome recorded because its step timed out


@dataclass(frozen=True, slots=True)
class EssayStepResult:
    """One step's result for one essay: its counted outcome, or ``None`` while the essay is open
    at a new attempt (``run_id``, ``attempt``) with no outcome yet."""

    step: str
    outcome: Outcome | None
    output_storage_id: str = ""
    error_code: str = ""
    error_message: str = ""
    run_id: str = ""
    attempt: int = 1
    recorded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class BatchRegistration:
    """What the conductor knows of a batch: its essays (in order) and the flags that are set."""

    batch_id: str
    essay_ids: tuple[str, ...]
    flags: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class StepState:
    """Counts and derived status of one step of one batch. ``total`` is 0 while WAITING/BLOCKED;
    ``timed_out`` counts the failures recorded because the step timed out."""

    step: str
    succeeded: int
    failed: int
    total: int
    status: StepStatus
    timed_out: int = 0

    @property
    def complete(self) -> bool:
        return self.status in (StepStatus.SATISFIED, StepStatus.UNSATISFIED)


def counted_status(succeeded: int, failed: int, total: int, min_success_ratio: float) -> StepStatus:
    """Status of a step whose expected essays are known (``total`` of them)."""
    if succeeded + failed < total:
        return StepStatus.IN_PROGRESS if succeeded + failed else StepStatus.NOT_STARTED
    if total == 0 or succeeded / total < min_success_ratio:
        return StepStatus.UNSATISFIED
    return StepStatus.SATISFIED


def expected_essays(
    step: StepDefinition,
    essay_ids: Sequence[str],
    dependency_states: Mapping[str, StepState],
    succeeded_by_step: Mapping[str, Set[str]],
) -> tuple[str, ...] | StepStatus:
    """The essays ``step`` must account for, in batch order, or why they are not known yet.

    Returns ``StepStatus.BLOCKED`` when a dependency completed unsatisfied (or is blocked) and
    ``StepStatus.WAITING`` when a dependency is not complete yet.
    """
    if not step.depends_on:
        return tuple(essay_ids)
    states = [dependency_states[name] for name in step.depends_on]
    if any(s.status in (StepStatus.UNSATISFIED, StepStatus.BLOCKED) for s in states):
        return StepStatus.BLOCKED
    if not all(s.status is StepStatus.SATISFIED for s in states):
        return StepStatus.WAITING
    return tuple(
        essay
        for essay in essay_ids
        if all(essay in succeeded_by_step.get(name, ()) for name in step.depends_on)
    )
