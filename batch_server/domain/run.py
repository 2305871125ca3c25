"""The run state machine: starting a run, recording step completions, advancing, finishing.

Advancing a run (after it starts and after every completion) is one rule applied until nothing
changes, so the result does not depend on the order of the steps:

- a PENDING step whose dependencies are all satisfied (SATISFIED in this run, pruned as
  already satisfied, or satisfied for the batch before the run) is DISPATCHED with the essays
  that succeeded in **every** dependency and were not sent to it before in the run, plus those a
  retry reopened for it (``domain.control``), each with its latest text storage id, at the
  run's attempt; with nothing to send, a step never dispatched completes UNSATISFIED at once
  (0 of 0) and one dispatched before keeps the result of its last completion;
- a PENDING step with a dependency that ended UNSATISFIED or was skipped is
  SKIPPED_DUE_TO_DEPENDENCY_FAILURE;
- once no step is PENDING or DISPATCHED the run ends: CANCELLED if a step was cancelled, FAILED
  if a step ended unsatisfied or skipped, else COMPLETED_WITH_FAILURES if some essay failed a
  step, else COMPLETED.

A completion advances the run only if it answers the step's current dispatch: one of this run
at the step's attempt, or (for a step at its first attempt) one of another run or of none,
whose outcomes the conductor counted for the batch all the same. A dispatched step with a
timeout gets a deadline; the BatchService asks the conductor to time it out when it passes.

Each step change is a numbered ``Transition`` carrying the run's status as of that change, so a
watcher replaying transitions sees every intermediate state. An essay's latest text is the output
storage id of the last step that produced one, else its original text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from batch_server.domain.errors import InvalidCompletion, RunConflict
from batch_server.domain.model import (
    Batch,
    Dispatch,
    Essay,
    EssayRef,
    PipelineRun,
    Resolution,
    RunStatus,
    RunStep,
    RunSummary,
    StepCompletion,
    StepResult,
    StepStatus,
    Transition,
)

_FAILED_STEP = frozenset({StepStatus.UNSATISFIED, StepStatus.SKIPPED_DUE_TO_DEPENDENCY_FAILURE})
_SATISFIED_STEP = frozenset({StepStatus.SATISFIED, StepStatus.SKIPPED_ALREADY_SATISFIED})


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """What advancement reads: the batch (essays with their latest text), the latest result of
    each step completed for the batch, and its active run, if any."""

    batch: Batch
    results: Mapping[str, StepResult]
    active_run: PipelineRun | None = None


@dataclass(frozen=True, slots=True)
class RunChange:
    """A run after a change, the transitions that led there, the commands to publish, and its
    summary when this change ended it."""

    run: PipelineRun
    transitions: tuple[Transition, ...]
    dispatches: tuple[Dispatch, ...]
    summary: RunSummary | None = None


@dataclass(frozen=True, slots=True)
class RecordedCompletion:
    """A completion recorded for the batch: the new progress, the step result, changed texts."""

    progress: BatchProgress
    result: StepResult
    texts: Mapping[str, str]  # essay id -> new latest storage id


def start_run(
    progress: BatchProgress,
    *,
    run_id: str,
    pipeline: str,
    resolution: Resolution,
    request_id: str,
    correlation_id: str,
    now: datetime,
) -> RunChange:
    """A new run of ``pipeline`` over the batch, advanced as far as it can go now.

    Raises ``RunConflict`` when the batch already has an active run.
    """
    if progress.active_run is not None:
        raise RunConflict(progress.batch.batch_id, progress.active_run.run_id)
    planned = {plan.name for plan in resolution.steps}
    pruned = [
        RunStep(name, "", (), StepStatus.SKIPPED_ALREADY_SATISFIED)
        for name in dict.fromkeys(resolution.pruned)
        if name not in planned
    ]
    steps = [
        RunStep(plan.name, plan.command, plan.depends_on, StepStatus.PENDING, timeout=plan.timeout)
        for plan in resolution.steps
    ]
    run = PipelineRun(
        run_id=run_id,
        batch_id=progress.batch.batch_id,
        pipeline=pipeline,
        status=RunStatus.PENDING,
        definition_version=resolution.definition_version,
        steps=(*pruned, *steps),
        created_at=now,
        request_id=request_id,
        correlation_id=correlation_id,
    )
    return advance(run, progress, now, [])


def record_completion(progress: BatchProgress, completion: StepCompletion) -> RecordedCompletion:
    """Record ``completion`` as the batch's latest result of its step and update essay texts.

    Raises ``InvalidCompletion`` when the fact breaks the contract.
    """
    batch = progress.batch
    _validate(completion, batch)
    succeeded = {ref.essay_id: ref.storage_id for ref in completion.succeeded_essays}
    result = StepResult(
        completion.step,
        completion.satisfied,
        completion.succeeded,
        completion.failed,
        completion.total,
        succeeded,
    )
    texts = {
        essay.essay_id: succeeded[essay.essay_id]
        for essay in batch.essays
        if succeeded.get(essay.essay_id) and succeeded[essay.essay_id] != essay.current_storage_id
    }
    if texts:
        essays = tuple(
            Essay(e.essay_id, e.client_ref, e.original_storage_id, texts[e.essay_id])
            if e.essay_id in texts
            else e
            for e in batch.essays
        )
        batch = dataclasses.replace(batch, essays=essays)
    updated = BatchProgress(
        batch, {**progress.results, completion.step: result}, progress.active_run
    )
    return RecordedCompletion(updated, result, texts)


def with_run(progress: BatchProgress, run: PipelineRun) -> BatchProgress:
    """``progress`` once ``run`` is written: ``run`` is the batch's active run while it is active;
    once it has ended the batch has none, unless another run is the active one."""
    if not run.status.terminal:
        return dataclasses.replace(progress, active_run=run)
    if progress.active_run is not None and progress.active_run.run_id != run.run_id:
        return progress
    return dataclasses.replace(progress, active_run=None)


def is_repeat(progress: BatchProgress, completion: StepCompletion) -> bool:
    """Whether ``completion`` is the batch's latest result of its step already (a redelivery)."""
    known = progress.results.get(completion.step)
    return (
        known is not None
        and known.satisfied == completion.satisfied
        and (known.succeeded, known.failed, known.total)
        == (completion.succeeded, completion.failed, completion.total)
        and dict(known.succeeded_essays)
        == {ref.essay_id: ref.storage_id for ref in completion.succeeded_essays}
    )


def complete_step(
    progress: BatchProgress, completion: StepCompletion, now: datetime
) -> RunChange | None:
    """Advance the batch's active run on a (recorded) completion of one of its dispatched steps.

    ``None`` when no active run waits for that step (a repeat, or a step run outside any run).
    """
    run = progress.active_run
    step = run.step(completion.step) if run is not None else None
    if run is None or step is None or step.status is not StepStatus.DISPATCHED:
        return None
    if not answers_dispatch(run, step, completion):
        return None
    done = dataclasses.replace(
        step,
        status=StepStatus.SATISFIED if completion.satisfied else StepStatus.UNSATISFIED,
        succeeded=completion.succeeded,
        failed=completion.failed,
        total=completion.total,
        timed_out=completion.timed_out,
        deadline=None,
    )
    steps = tuple(done if s.name == step.name else s for s in run.steps)
    if step.name not in run.completed_steps:
        run = dataclasses.replace(run, completed_steps=(*run.completed_steps, step.name))
    transitions: list[Transition] = []
    run = changed(run, steps, done, now, transitions)
    return advance(run, progress, now, transitions)


def answers_dispatch(run: PipelineRun, step: RunStep, completion: StepCompletion) -> bool:
    """Whether ``completion`` answers the step's current dispatch (see the module docstring)."""
    if completion.run_id == run.run_id:
        return completion.attempt == step.attempt
    return step.attempt <= 1


def summarize(run: PipelineRun, progress: BatchProgress) -> RunSummary:
    """Essay counts of a finished run: an essay failed if it failed any step it was sent to in
    this run; every other essay of the batch counts as succeeded."""
    failed: set[str] = set()
    for step in run.steps:
        result = progress.results.get(step.name)
        if step.essays and step.status in (StepStatus.SATISFIED, StepStatus.UNSATISFIED):
            succeeded = result.succeeded_essays if result is not None else {}
            failed.update(e for e in step.essays if e not in succeeded)
    return RunSummary(run, len(progress.batch.essays) - len(failed), len(failed))


def apply_transition(run: PipelineRun, transition: Transition) -> PipelineRun:
    """``run`` as of ``transition`` (for replaying a run's transitions in order)."""
    steps = tuple(
        dataclasses.replace(
            s,
            status=transition.step_status,
            succeeded=transition.succeeded,
            failed=transition.failed,
            total=transition.total,
            attempt=transition.step_attempt,
            timed_out=transition.timed_out,
            deadline=transition.deadline,
        )
        if s.name == transition.step
        else s
        for s in run.steps
    )
    return dataclasses.replace(
        run,
        steps=steps,
        status=transition.run_status,
        finished_at=transition.finished_at,
        version=transition.seq,
        attempt=transition.attempt,
        cancel_reason=transition.cancel_reason,
    )


def run_status(steps: Sequence[RunStep]) -> RunStatus:
    """The status a run with ``steps`` is in."""
    if any(not s.status.terminal for s in steps):
        started = any(
            s.status not in (StepStatus.PENDING, StepStatus.SKIPPED_ALREADY_SATISFIED)
            for s in steps
        )
        return RunStatus.RUNNING if started else RunStatus.PENDING
    if any(s.status is StepStatus.CANCELLED for s in steps):
        return RunStatus.CANCELLED
    if any(s.status in _FAILED_STEP for s in steps):
        return RunStatus.FAILED
    if any(s.failed for s in steps):
        return RunStatus.COMPLETED_WITH_FAILURES
    return RunStatus.COMPLETED


# --- advancing ----------------------------------------------------------------------------


class _Readiness(Enum):
    WAITING = "waiting"
    READY = "ready"
    BLOCKED = "blocked"


def advance(
    run: PipelineRun, progress: BatchProgress, now: datetime, transitions: list[Transition]
) -> RunChange:
    """Move every step that can move; ``run`` was active before the change being applied."""
    dispatches: list[Dispatch] = []
    moving = True
    while moving and not run.status.terminal:
        moving = False
        for step in run.steps:
            if step.status is not StepStatus.PENDING:
                continue
            moved = _move(step, run, progress, now, dispatches)
            if moved is not None:
                steps = tuple(moved if s.name == step.name else s for s in run.steps)
                run = changed(run, steps, moved, now, transitions)
                moving = True
    if run.status is RunStatus.PENDING:  # nothing was dispatched: every step was pruned
        run = dataclasses.replace(run, status=run_status(run.steps))
    if run.status.terminal and run.finished_at is None:
        run = dataclasses.replace(run, finished_at=now)
    summary = summarize(run, progress) if run.status.terminal else None
    return RunChange(run, tuple(transitions), tuple(dispatches), summary)


def _move(
    step: RunStep,
    run: PipelineRun,
    progress: BatchProgress,
    now: datetime,
    dispatches: list[Dispatch],
) -> RunStep | None:
    """The step's next state, or None while it must wait."""
    readiness = _readiness(step, run, progress.results)
    if readiness is _Readiness.WAITING:
        return None
    if readiness is _Readiness.BLOCKED:
        return dataclasses.replace(step, status=StepStatus.SKIPPED_DUE_TO_DEPENDENCY_FAILURE)
    essays = _to_send(step, progress)
    if not essays:
        if not step.attempt:
            return dataclasses.replace(step, status=StepStatus.UNSATISFIED, total=0)
        return _as_last_completed(step, progress.results.get(step.name))
    dispatch = Dispatch(run.run_id, run.batch_id, step.name, step.command, essays, run.attempt)
    dispatches.append(dispatch)
    if step.essays:  # sent some before: the new ones join them, in batch order
        expected = {e.essay_id for e in essays}.union(step.essays)
        every = tuple(e.essay_id for e in progress.batch.essays if e.essay_id in expected)
    else:  # ``essays`` is in batch order already
        every = tuple(e.essay_id for e in essays)
    deadline = now + timedelta(seconds=step.timeout) if step.timeout else None
    return dataclasses.replace(
        step,
        status=StepStatus.DISPATCHED,
        total=len(every),
        failed=max(len(every) - step.succeeded - len(essays), 0),
        essays=every,
        attempt=run.attempt,
        deadline=deadline,
        retry_essays=(),
    )


def _to_send(step: RunStep, progress: BatchProgress) -> tuple[EssayRef, ...]:
    """What the step's next dispatch carries, in batch order: the essays a retry reopened for
    it, and those eligible (``_eligible``) that it has not been sent in the run."""
    reopened, sent = set(step.retry_essays), set(step.essays)
    eligible = _eligible(step, progress)
    return tuple(
        e.ref
        for e in progress.batch.essays
        if e.essay_id in reopened
        or ((eligible is None or e.essay_id in eligible) and e.essay_id not in sent)
    )


def _as_last_completed(step: RunStep, result: StepResult | None) -> RunStep:
    """A step dispatched before that a retry has nothing new for: as its last completion left it."""
    if result is None:
        status = (
            StepStatus.SATISFIED if step.succeeded and not step.failed else StepStatus.UNSATISFIED
        )
        return dataclasses.replace(step, status=status, retry_essays=())
    return dataclasses.replace(
        step,
        status=StepStatus.SATISFIED if result.satisfied else StepStatus.UNSATISFIED,
        succeeded=result.succeeded,
        failed=result.failed,
        total=result.total,
        retry_essays=(),
    )


def _readiness(step: RunStep, run: PipelineRun, results: Mapping[str, StepResult]) -> _Readiness:
    waiting = False
    for dep in step.depends_on:
        in_run = run.step(dep)
        if in_run is None:  # satisfied (or not) for the batch before this run
            result = results.get(dep)
            if result is None or not result.satisfied:
                return _Readiness.BLOCKED
        elif in_run.status in _FAILED_STEP:
            return _Readiness.BLOCKED
        elif in_run.status not in _SATISFIED_STEP:
            waiting = True
    return _Readiness.WAITING if waiting else _Readiness.READY


def _eligible(step: RunStep, progress: BatchProgress) -> set[str] | None:
    """The essays that succeeded in every dependency of ``step``; None: every essay of the batch.

    A dependency with no recorded result (pruned before this service saw its completion)
    does not narrow the set.
    """
    known = [progress.results[d].succeeded_essays for d in step.depends_on if d in progress.results]
    if not known:
        return None
    return set(known[0]).intersection(*known[1:])


def changed(
    run: PipelineRun,
    steps: tuple[RunStep, ...],
    step: RunStep,
    now: datetime,
    transitions: list[Transition],
) -> PipelineRun:
    """``run`` with ``steps`` after ``step`` changed, its transition appended."""
    status = run_status(steps)
    finished_at = now if status.terminal else None
    seq = run.version + 1
    transitions.append(
        Transition(
            run.run_id,
            seq,
            step.name,
            step.status,
            step.succeeded,
            step.failed,
            step.total,
            status,
            finished_at,
            run.attempt,
            step.attempt,
            step.timed_out,
            step.deadline,
            run.cancel_reason,
        )
    )
    return dataclasses.replace(
        run, steps=steps, status=status, finished_at=finished_at, version=seq
    )


def _validate(completion: StepCompletion, batch: Batch) -> None:
    if completion.succeeded + completion.failed != completion.total:
        raise InvalidCompletion(
            f"step '{completion.step}': succeeded {completion.succeeded} + failed "
            f"{completion.failed} != total {completion.total}"
        )
    ids = [ref.essay_id for ref in completion.succeeded_essays]
    if len(ids) != completion.succeeded or len(set(ids)) != len(ids):
        raise InvalidCompletion(
            f"step '{completion.step}': {len(set(ids))} distinct succeeded essays listed, "
            f"{completion.succeeded} counted"
        )
    known = {e.essay_id for e in batch.essays}
    strangers = [i for i in ids if i not in known]
    if strangers:
        raise InvalidCompletion(
            f"step '{completion.step}': essays {strangers[:5]} are not in batch '{batch.batch_id}'"
        )
