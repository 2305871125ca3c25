"""Core values of the BatchService: batches, essays, pipeline runs, their steps and transitions.

A **run** is one execution of a pipeline (or single step) over a batch. Its steps are in
execution order (dependencies first): steps the conductor pruned come first, marked
``SKIPPED_ALREADY_SATISFIED``, then the steps to run in the conductor's order.

Run states: ``PENDING`` → ``RUNNING`` → ``COMPLETED`` | ``COMPLETED_WITH_FAILURES`` | ``FAILED``
| ``CANCELLED``; a retry (``domain.control``) takes a finished run back to ``RUNNING`` at its
next *attempt*. Step states: ``PENDING`` → ``DISPATCHED`` → ``SATISFIED`` | ``UNSATISFIED``; a
pending step may instead end ``SKIPPED_DUE_TO_DEPENDENCY_FAILURE``, a pending or dispatched one
``CANCELLED`` (the run was cancelled); pruned steps start (and stay) ``SKIPPED_ALREADY_SATISFIED``.
Every step change is a numbered ``Transition``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

DEFAULT_LANGUAGE = "en"


class RunStatus(StrEnum):
    """Lifecycle of a pipeline run (persisted by value)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in ACTIVE_RUN_STATUSES


ACTIVE_RUN_STATUSES = frozenset({RunStatus.PENDING, RunStatus.RUNNING})


class StepStatus(StrEnum):
    """Lifecycle of one step within one run (persisted by value)."""

    PENDING = "pending"
    DISPATCHED = "dispatched"
    SATISFIED = "satisfied"
    UNSATISFIED = "unsatisfied"
    SKIPPED_DUE_TO_DEPENDENCY_FAILURE = "skipped_due_to_dependency_failure"
    SKIPPED_ALREADY_SATISFIED = "skipped_already_satisfied"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (StepStatus.PENDING, StepStatus.DISPATCHED)


class EssayRef(NamedTuple):
    """An essay and where its text (the version meant for the next step) is stored.

    Essays and their refs are built by the batchful (every essay of a completion and of each
    command it dispatches): named tuples are as immutable as frozen dataclasses and a fraction
    of their cost to build."""

    essay_id: str
    storage_id: str


class Essay(NamedTuple):
    essay_id: str
    client_ref: str
    original_storage_id: str
    current_storage_id: str

    @property
    def ref(self) -> EssayRef:
        return EssayRef(self.essay_id, self.current_storage_id)


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    """Descriptive data and gating flags. Mappings are never mutated after construction."""

    name: str = ""
    course_code: str = ""
    language: str = DEFAULT_LANGUAGE
    flags: Mapping[str, bool] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


# The BatchMetadata fields UpdateBatch sets
UPDATABLE_FIELDS = ("flags", "labels", "name", "course_code")


@dataclass(frozen=True, slots=True)
class MetadataUpdate:
    """UpdateBatch's change: the ``fields`` of ``metadata`` that replace the batch's (a map is
    replaced whole). ``fields`` are some of ``UPDATABLE_FIELDS``."""

    fields: frozenset[str]
    metadata: BatchMetadata

    def apply(self, current: BatchMetadata) -> BatchMetadata:
        """``current`` with the named fields replaced; the same update again changes nothing."""
        return replace(
            current, **{name: getattr(self.metadata, name) for name in sorted(self.fields)}
        )


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    essays: tuple[Essay, ...]
    metadata: BatchMetadata
    created_at: datetime

    def essay(self, essay_id: str) -> Essay | None:
        return next((e for e in self.essays if e.essay_id == essay_id), None)


@dataclass(frozen=True, slots=True)
class EssayInput:
    """One essay of a CreateBatch request."""

    text: str
    client_ref: str = ""


@dataclass(frozen=True, slots=True)
class BatchSummary:
    batch_id: str
    name: str
    essay_count: int
    created_at: datetime
    latest_run_status: RunStatus | None  # of its newest run; None without one
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StepPlan:
    """A step to run, as the conductor resolved it (pinned for the run).

    ``timeout``: seconds the step may take after its dispatch (None: no timeout).
    ``produces_text``: its outputs become the essays' latest text (the conductor applies that
    rule when it announces the step's completion; this is for information).
    """

    name: str
    command: str
    depends_on: tuple[str, ...] = ()
    timeout: float | None = None  # seconds a dispatch may take; None: no timeout
    produces_text: bool = False


@dataclass(frozen=True, slots=True)
class Resolution:
    """The conductor's answer to a ResolvePipeline: steps to run, pruned steps, version."""

    steps: tuple[StepPlan, ...]
    pruned: tuple[str, ...]
    definition_version: str


@dataclass(frozen=True, slots=True)
class RunStep:
    """One step of a run.

    ``essays``: every essay it was dispatched with in the run (empty until then). ``attempt``:
    the run's attempt that dispatched it last (0: never). ``retry_essays``: the essays a retry
    reopened, sent with its next dispatch. ``deadline``: when its dispatch times out
    (``timeout`` seconds after it), while it is dispatched. ``timed_out``: of the failures,
    those that timed out.
    """

    name: str
    command: str
    depends_on: tuple[str, ...]
    status: StepStatus
    succeeded: int = 0
    failed: int = 0
    total: int = 0
    essays: tuple[str, ...] = ()
    attempt: int = 0
    timeout: float | None = None
    deadline: datetime | None = None
    timed_out: int = 0
    retry_essays: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """A run over a batch. ``version`` is the sequence number of its latest transition."""

    run_id: str
    batch_id: str
    pipeline: str
    status: RunStatus
    definition_version: str
    steps: tuple[RunStep, ...]
    created_at: datetime
    finished_at: datetime | None = None
    request_id: str = ""
    correlation_id: str = ""
    version: int = 0
    completed_steps: tuple[str, ...] = ()  # in completion order
    attempt: int = 1  # one more for each retry
    cancel_reason: str = ""

    def step(self, name: str) -> RunStep | None:
        return next((s for s in self.steps if s.name == name), None)

    @property
    def pruned_steps(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps if s.status is StepStatus.SKIPPED_ALREADY_SATISFIED)

    @property
    def planned_steps(self) -> tuple[str, ...]:
        """The steps the run was started to run (not pruned), in order."""
        return tuple(
            s.name for s in self.steps if s.status is not StepStatus.SKIPPED_ALREADY_SATISFIED
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """Step ``step`` of run ``run_id`` changed; the run's status, attempt, end and cancel reason
    as of then."""

    run_id: str
    seq: int
    step: str
    step_status: StepStatus
    succeeded: int
    failed: int
    total: int
    run_status: RunStatus
    finished_at: datetime | None = None
    attempt: int = 1
    step_attempt: int = 0
    timed_out: int = 0
    deadline: datetime | None = None
    cancel_reason: str = ""


@dataclass(frozen=True, slots=True)
class StepCompletion:
    """The conductor's fact: every expected essay of ``step`` has an outcome (BatchStepCompleted).

    ``succeeded_essays`` carry the step's output storage id (empty when it made no new text).
    ``run_id`` and ``attempt``: those of the outcome (or timeout) that completed the step.
    """

    batch_id: str
    step: str
    succeeded: int
    failed: int
    total: int
    satisfied: bool
    succeeded_essays: tuple[EssayRef, ...] = ()
    run_id: str = ""
    attempt: int = 1
    timed_out: int = 0


@dataclass(frozen=True, slots=True)
class StepResult:
    """The latest completion of a step for a batch: the essays that succeeded, by id."""

    step: str
    satisfied: bool
    succeeded: int
    failed: int
    total: int
    succeeded_essays: Mapping[str, str]  # essay id -> output storage id ("" for none)


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A step command to publish: run ``step`` of ``run_id`` for ``essays``."""

    run_id: str
    batch_id: str
    step: str
    command: str
    essays: tuple[EssayRef, ...]
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class RunSummary:
    """How a finished run ended (the PipelineRunCompleted fact)."""

    run: PipelineRun
    succeeded_essays: int
    failed_essays: int

    @property
    def duration_seconds(self) -> float:
        end = self.run.finished_at or self.run.created_at
        return max((end - self.run.created_at).total_seconds(), 0.0)
