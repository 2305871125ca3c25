"""CancelRun and RetryRun: the use cases over the run-control rules (``domain.control``).

Both change a run under its batch's lock (``BatchStore.progress``) and commit the change with
its events, like every other change of a run; watchers are woken after the commit.

- **Cancel** is idempotent: a cancelled run is answered as it is. It emits ``RunCancelled``
  (workers drop the run's queued commands) and the run's ``PipelineRunCompleted`` (CANCELLED).
- **Retry** asks the conductor first (``ReopenEssays``: idempotent per attempt, so a retry that
  fails after it, or a repeat, reopens nothing twice), then stores the new attempt, its
  transitions and its commands, with the retry's record (``run_retries``) under its request
  id. The request id makes the call idempotent: a repeat answers the run as that retry left it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from batch_server import events
from batch_server.conductor import Conductor
from batch_server.domain import control
from batch_server.domain.errors import (
    RequestIdReused,
    RunConflict,
    RunFinished,
    RunNotFinished,
    RunNotFound,
)
from batch_server.domain.identity import new_id
from batch_server.domain.model import PipelineRun, RunStatus
from batch_server.domain.run import BatchProgress, RunChange, with_run
from batch_server.metrics import BatchMetrics
from batch_server.ports import BatchStore, ProgressUnit, ProgressWrite, RetryRecord
from batch_server.watch import ProgressFeed
from mesh.errors import FieldViolation, InvalidArgument
from mesh.tracing.provider import OFF, Tracing

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Retried:
    """A run at the attempt a retry started, and what it sent again (step, essay count)."""

    run: PipelineRun
    steps: tuple[tuple[str, int], ...]


class RunControl:
    """Cancel and retry runs of the store's batches."""

    def __init__(
        self,
        store: BatchStore,
        conductor: Conductor,
        feed: ProgressFeed,
        clock: Callable[[], datetime],
        *,
        metrics: BatchMetrics | None = None,
        tracing: Tracing = OFF,
    ) -> None:
        self._store = store
        self._conductor = conductor
        self._feed = feed
        self._now = clock
        self._metrics = metrics
        self._tracing = tracing

    async def cancel(self, batch_id: str, run_id: str, reason: str) -> PipelineRun:
        await self._run_of(batch_id, run_id)
        now = self._now()
        async with self._store.progress() as unit:
            progress = (await unit.load([batch_id]))[batch_id]
            run = await unit.get_run(run_id)
            assert run is not None
            if run.status is RunStatus.CANCELLED:
                return run
            if run.status.terminal:
                raise RunFinished(run_id, run.status.value)
            change = control.cancel(run, progress, reason, now)
            await self._save(unit, change, progress, now)
        self._ended(change)
        log.info("cancelled run %s of batch %s (%s)", run_id, batch_id, reason or "no reason")
        return change.run

    async def retry(
        self, batch_id: str, run_id: str, steps: Sequence[str], request_id: str
    ) -> Retried:
        batch = await self._store.get_batch(batch_id)
        run = await self._run_of(batch_id, run_id)
        if request_id:
            known = await self._store.retry_for_request(run_id, request_id)
            if known is not None:
                return await self._repeat(known, steps)
        else:
            request_id = new_id()
        _check_steps(run, steps)
        if not run.status.terminal:
            raise RunNotFinished(run_id)
        active = next(
            (r for r in await self._store.list_runs(batch_id) if not r.status.terminal), None
        )
        if active is not None:
            raise RunConflict(batch_id, active.run_id)
        scope = control.retry_scope(run, steps)
        attempt = run.attempt + 1
        await self._conductor.register(batch)  # idempotent; heals a conductor that forgot it
        reopened = await self._conductor.reopen(batch_id, run_id, attempt, scope.reopen)
        now = self._now()
        async with self._store.progress() as unit:
            progress = (await unit.load([batch_id]))[batch_id]
            current = await unit.get_run(run_id)
            assert current is not None
            if current.attempt != run.attempt or not current.status.terminal:
                raise RunConflict(batch_id, run_id)  # a concurrent retry (or start) won
            if progress.active_run is not None:  # a run started since the check above
                raise RunConflict(batch_id, progress.active_run.run_id)
            change = control.retry(current, progress, scope, reopened, now)
            sent = {d.step: len(d.essays) for d in change.dispatches}
            retried = tuple(
                (name, sent.get(name, 0)) for name in (*scope.reopen, *scope.downstream)
            )
            record = RetryRecord(run_id, attempt, request_id, tuple(steps), retried)
            await self._save(unit, change, progress, now, record)
        self._ended(change)
        log.info(
            "retried run %s of batch %s: attempt %d, reopened %s, dispatched %s",
            run_id,
            batch_id,
            attempt,
            {name: len(reopened.get(name, ())) for name in scope.reopen},
            sorted(sent),
        )
        return Retried(change.run, retried)

    async def _repeat(self, known: RetryRecord, steps: Sequence[str]) -> Retried:
        """The answer to a repeat of the retry ``known`` (the run as it is now)."""
        if tuple(steps) != known.steps:
            raise RequestIdReused(
                known.request_id, f"a retry of run {known.run_id} limited to {list(known.steps)}"
            )
        run = await self._store.get_run(known.run_id)
        assert run is not None
        return Retried(run, known.retried)

    async def _run_of(self, batch_id: str, run_id: str) -> PipelineRun:
        """The run, which must be one of the batch's (``BatchNotFound`` first if the batch is
        not there either)."""
        run = await self._store.get_run(run_id)
        if run is None or run.batch_id != batch_id:
            await self._store.get_batch(batch_id)
            raise RunNotFound(batch_id, run_id)
        return run

    async def _save(
        self,
        unit: ProgressUnit,
        change: RunChange,
        progress: BatchProgress,
        now: datetime,
        retry: RetryRecord | None = None,
    ) -> None:
        batch = progress.batch
        commands, others = events.for_change(change, batch, now, self._tracing)
        await unit.save(
            ProgressWrite(
                batch.batch_id,
                run=change.run,
                transitions=change.transitions,
                commands=commands,
                events=others,
                retry=retry,
            )
        )
        unit.settle(with_run(progress, change.run))

    def _ended(self, change: RunChange) -> None:
        self._feed.notify([change.run.run_id])
        if change.summary is not None and self._metrics is not None:
            self._metrics.run_ended(change.summary)


def _check_steps(run: PipelineRun, steps: Sequence[str]) -> None:
    """``InvalidArgument`` for each name of ``steps`` that is not a step of ``run``."""
    names = {s.name for s in run.steps}
    unknown = [
        FieldViolation(f"steps[{n}]", f"'{name}' is not a step of run {run.run_id}")
        for n, name in enumerate(steps)
        if name not in names
    ]
    if unknown:
        raise InvalidArgument(unknown)
