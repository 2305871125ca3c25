"""Run progression: what a pipeline run does next, given the batch's step states.

A run is its steps in resolved order (dependencies first), plus the set of steps it already
dispatched. Each call to ``advance`` answers:

- dispatch: every step not yet dispatched whose dependencies are all SATISFIED (parallel
  branches together). A dependency outside the run counts when SATISFIED (it was pruned).
- skip: every step not yet dispatched with a dependency that completed UNSATISFIED, is BLOCKED,
  or was skipped (transitively): ``SKIPPED_DUE_TO_DEPENDENCY_FAILURE``. A dependency outside the
  run that is not SATISFIED also skips: nothing in this run would ever satisfy it.
- outcome, once nothing is pending: FAILED if a step completed unsatisfied (or blocked) or was
  skipped; else COMPLETED_WITH_FAILURES if some essay failed a run step; else COMPLETED.

``advance`` is a pure function of its inputs; skipped steps are reported on every call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from enum import Enum, StrEnum

from conductor_server.domain.model import StepDefinition, StepState, StepStatus


class RunOutcome(StrEnum):
    """How a run ended."""

    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    FAILED = "failed"


class SkipReason(StrEnum):
    SKIPPED_DUE_TO_DEPENDENCY_FAILURE = "skipped_due_to_dependency_failure"


@dataclass(frozen=True, slots=True)
class SkippedStep:
    """A step the run will not dispatch; ``blocked_by`` is the first failed dependency."""

    step: StepDefinition
    blocked_by: str
    reason: SkipReason = SkipReason.SKIPPED_DUE_TO_DEPENDENCY_FAILURE


@dataclass(frozen=True, slots=True)
class Progress:
    """What to do now: ``dispatch`` these, record ``skipped``; ``outcome`` once finished."""

    dispatch: tuple[StepDefinition, ...]
    skipped: tuple[SkippedStep, ...]
    outcome: RunOutcome | None

    @property
    def finished(self) -> bool:
        return self.outcome is not None


class _Verdict(Enum):
    PENDING = "pending"
    SATISFIED = "satisfied"
    FAILED = "failed"  # completed unsatisfied, blocked, or skipped


_FAILED_STATUSES = frozenset({StepStatus.UNSATISFIED, StepStatus.BLOCKED})


def _status(state: StepState | None) -> StepStatus:
    return state.status if state is not None else StepStatus.NOT_STARTED


def _dispatched_verdict(state: StepState | None) -> _Verdict:
    status = _status(state)
    if status == StepStatus.SATISFIED:
        return _Verdict.SATISFIED
    return _Verdict.FAILED if status in _FAILED_STATUSES else _Verdict.PENDING


def advance(
    steps: Sequence[StepDefinition],
    states: Mapping[str, StepState],
    dispatched: Set[str],
) -> Progress:
    """The next moves of a run of ``steps`` (dependencies first) that already ``dispatched``.

    Raises ``ValueError`` if a step of the run comes before one of its dependencies.
    """
    in_run = {step.name for step in steps}
    verdicts: dict[str, _Verdict] = {}
    dispatch: list[StepDefinition] = []
    skipped: list[SkippedStep] = []
    for step in steps:
        if step.name in dispatched:
            verdicts[step.name] = _dispatched_verdict(states.get(step.name))
            continue
        blocker, waiting = _dependencies(step, in_run, verdicts, states)
        if blocker:
            skipped.append(SkippedStep(step, blocker))
            verdicts[step.name] = _Verdict.FAILED
        else:
            if not waiting:
                dispatch.append(step)
            verdicts[step.name] = _Verdict.PENDING
    return Progress(tuple(dispatch), tuple(skipped), _outcome(steps, verdicts, states))


def _dependencies(
    step: StepDefinition,
    in_run: Set[str],
    verdicts: Mapping[str, _Verdict],
    states: Mapping[str, StepState],
) -> tuple[str, bool]:
    """(The first failed dependency or "", whether some dependency is still pending)."""
    waiting = False
    for dep in step.depends_on:
        if dep in in_run:
            if dep not in verdicts:
                raise ValueError(f"step '{step.name}' comes before its dependency '{dep}'")
            verdict = verdicts[dep]
        elif _status(states.get(dep)) == StepStatus.SATISFIED:
            verdict = _Verdict.SATISFIED
        else:
            verdict = _Verdict.FAILED
        if verdict is _Verdict.FAILED:
            return dep, waiting
        waiting = waiting or verdict is _Verdict.PENDING
    return "", waiting


def _outcome(
    steps: Sequence[StepDefinition],
    verdicts: Mapping[str, _Verdict],
    states: Mapping[str, StepState],
) -> RunOutcome | None:
    values = set(verdicts.values())
    if _Verdict.PENDING in values:
        return None
    if _Verdict.FAILED in values:
        return RunOutcome.FAILED
    if any(states[step.name].failed for step in steps):
        return RunOutcome.COMPLETED_WITH_FAILURES
    return RunOutcome.COMPLETED
