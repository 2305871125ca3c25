"""Run control: cancelling an active run, and retrying a finished one at its next attempt.

**Cancel.** Every PENDING or DISPATCHED step of the run becomes CANCELLED (one transition each)
and the run ends CANCELLED; nothing more is dispatched for it. Outcomes that still arrive are
counted by the conductor; their completions are recorded as the batch's results but advance
nothing.

**Retry.** A finished run (failed, with failures, or cancelled) starts its next attempt:

- the steps to *reopen* are those of the run dispatched before (``attempt > 0``) that have
  failures or were cancelled; ``only`` limits them to the steps named. The conductor reopens
  their failed, timed-out and missing essays at the new attempt (``ReopenEssays``) and answers
  which ones; they go back to PENDING with those essays;
- every step of the run that depends on one of them (transitively, within the run) goes back to
  PENDING too: once its dependencies complete it is sent the essays that newly succeeded in all
  of them (or, never dispatched before, every essay it now expects);
- the run is RUNNING again and advances like a new one (``domain.run.advance``): a reopened
  step whose dependencies are satisfied is dispatched at once.

Steps pruned, or untouched by the retry, keep their state. ``NothingToRetry`` when no step
qualifies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from batch_server.domain.errors import NothingToRetry
from batch_server.domain.model import PipelineRun, RunStatus, StepStatus, Transition
from batch_server.domain.run import BatchProgress, RunChange, advance, changed, summarize

_OPEN = frozenset({StepStatus.PENDING, StepStatus.DISPATCHED})


def cancel(run: PipelineRun, progress: BatchProgress, reason: str, now: datetime) -> RunChange:
    """``run`` (active) cancelled: its open steps CANCELLED, the run ended."""
    run = dataclasses.replace(run, cancel_reason=reason)
    transitions: list[Transition] = []
    for step in run.steps:
        if step.status in _OPEN:
            stopped = dataclasses.replace(step, status=StepStatus.CANCELLED, deadline=None)
            steps = tuple(stopped if s.name == step.name else s for s in run.steps)
            run = changed(run, steps, stopped, now, transitions)
    if not run.status.terminal:  # no open step: a run that had nothing left to wait for
        run = dataclasses.replace(run, status=RunStatus.CANCELLED)
    run = dataclasses.replace(run, finished_at=run.finished_at or now)
    return RunChange(run, tuple(transitions), (), summarize(run, progress))


@dataclass(frozen=True, slots=True)
class RetryScope:
    """The steps a retry reopens, and the steps downstream of them that run again."""

    reopen: tuple[str, ...]
    downstream: tuple[str, ...]


def retry_scope(run: PipelineRun, only: Sequence[str] = ()) -> RetryScope:
    """What retrying ``run`` (limited to the steps of the run ``only`` names) runs again;
    ``NothingToRetry`` when no step (of those named) has an essay to run again."""
    reopen = tuple(
        s.name
        for s in run.steps
        if s.attempt > 0
        and (s.failed > 0 or s.status in (StepStatus.CANCELLED, StepStatus.UNSATISFIED))
        and (not only or s.name in only)
    )
    if not reopen:
        raise NothingToRetry(run.run_id, tuple(only))
    after = set(reopen)
    downstream: list[str] = []
    for step in run.steps:  # dependencies first
        if step.name in after or step.status is StepStatus.SKIPPED_ALREADY_SATISFIED:
            continue
        if any(dep in after for dep in step.depends_on):
            after.add(step.name)
            downstream.append(step.name)
    return RetryScope(reopen, tuple(downstream))


def retry(
    run: PipelineRun,
    progress: BatchProgress,
    scope: RetryScope,
    reopened: Mapping[str, Sequence[str]],
    now: datetime,
) -> RunChange:
    """``run`` at its next attempt, its ``scope`` PENDING again (a reopened step with the essays
    the conductor reopened for it), advanced as far as it can go now."""
    run = dataclasses.replace(
        run, attempt=run.attempt + 1, status=RunStatus.RUNNING, finished_at=None, cancel_reason=""
    )
    transitions: list[Transition] = []
    for step in run.steps:
        if step.name not in scope.reopen and step.name not in scope.downstream:
            continue
        again = dataclasses.replace(
            step,
            status=StepStatus.PENDING,
            deadline=None,
            retry_essays=tuple(reopened.get(step.name, ())),
        )
        steps = tuple(again if s.name == step.name else s for s in run.steps)
        run = changed(run, steps, again, now, transitions)
    return advance(run, progress, now, transitions)
