"""Run advancement from Kafka: the ``BatchStepCompleted`` handler of the mesh consumer runner.

One poll's messages are handled in ONE store transaction (``BatchStore.progress``): their
batches are locked and loaded together, each completion is recorded as the batch's latest result
of its step (essay texts updated), the batch's active run advances (the next steps' commands,
skips, the run's end), and everything commits with its events. A repeated completion changes
nothing and dispatches nothing (the run step is no longer DISPATCHED; dispatch records are unique
per (run, step)).

Failure policy (``mesh.events.retry``): an unknown batch or a fact that breaks the contract is
rejected as permanent (dead-lettered, the rest of the poll still commits); a database outage
raises for the whole poll, which is retried, never dead-lettered.

Each completion is applied under its message's correlation id and trace context, so the
commands it dispatches continue the trace of the outcome that completed the step. After the
commit, the transition latency of each completion that dispatched (its event timestamp to now)
and the duration of each run that ended are observed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from batch_server import events
from batch_server.domain.errors import BatchNotFound, InvalidCompletion
from batch_server.domain.model import EssayRef, StepCompletion
from batch_server.domain.run import (
    BatchProgress,
    RecordedCompletion,
    RunChange,
    complete_step,
    is_repeat,
    record_completion,
    with_run,
)
from batch_server.metrics import BatchMetrics
from batch_server.ports import BatchStore, ProgressWrite
from batch_server.service import Clock, utc_now
from batch_server.watch import ProgressFeed
from generated.huleedu.events.v1 import events_pb2
from mesh import correlation
from mesh.events.bus import Message, Rejection
from mesh.events.topics import EventKind
from mesh.tracing import propagation
from mesh.tracing.provider import OFF, Tracing

log = logging.getLogger(__name__)

CONSUMED = (EventKind.BATCH_STEP_COMPLETED,)
ACCEPTED = frozenset({"batch_step_completed"})  # payload field names (mesh.events.envelope)


def completion_from_proto(payload: events_pb2.BatchStepCompleted) -> StepCompletion:
    """The domain fact of a ``BatchStepCompleted``; ``InvalidCompletion`` if it is malformed."""
    if not payload.batch_id or not payload.step:
        raise InvalidCompletion("batch_id and step are required")
    return StepCompletion(
        batch_id=payload.batch_id,
        step=payload.step,
        succeeded=payload.succeeded,
        failed=payload.failed,
        total=payload.total,
        satisfied=payload.satisfied,
        succeeded_essays=tuple(
            EssayRef(e.essay_id, e.text_storage_id) for e in payload.succeeded_essays
        ),
        run_id=payload.run_id,
        attempt=max(payload.attempt, 1),
        timed_out=payload.timed_out,
    )


class CompletionHandler:
    """A ``mesh.events.bus.BatchHandler`` advancing runs on BatchStepCompleted facts."""

    def __init__(
        self,
        store: BatchStore,
        feed: ProgressFeed,
        *,
        clock: Clock = utc_now,
        metrics: BatchMetrics | None = None,
        tracing: Tracing = OFF,
    ) -> None:
        self._store = store
        self._feed = feed
        self._now = clock
        self._metrics = metrics
        self._tracing = tracing

    async def __call__(self, messages: Sequence[Message]) -> list[Rejection]:
        rejections: list[Rejection] = []
        parsed: list[tuple[Message, StepCompletion]] = []
        for message in messages:
            try:
                parsed.append(
                    (message, completion_from_proto(message.envelope.batch_step_completed))
                )
            except InvalidCompletion as exc:
                rejections.append(Rejection(message, exc))
        if not parsed:
            return rejections
        changed: list[str] = []
        applied: list[tuple[Message, StepCompletion, RunChange]] = []
        async with self._store.progress() as unit:
            progress = await unit.load([c.batch_id for _, c in parsed])
            for message, completion in parsed:
                current = progress.get(completion.batch_id)
                if current is None:
                    rejections.append(Rejection(message, BatchNotFound(completion.batch_id)))
                    continue
                cid = message.envelope.correlation_id or correlation.new()
                with correlation.bound(cid), propagation.activated(message.trace):
                    try:
                        after, write, change = self._apply(current, completion)
                    except InvalidCompletion as exc:
                        rejections.append(Rejection(message, exc))
                        continue
                if write is None:
                    continue
                await unit.save(write)
                progress[completion.batch_id] = after
                if write.run is not None:
                    changed.append(write.run.run_id)
                if change is not None:
                    applied.append((message, completion, change))
            for settled in progress.values():
                unit.settle(settled)
        self._feed.notify(changed)
        self._observe(applied)
        return rejections

    def _observe(self, applied: Sequence[tuple[Message, StepCompletion, RunChange]]) -> None:
        """Transition latencies and run durations of a committed poll."""
        if self._metrics is None or not applied:
            return
        now = time.time()
        for message, completion, change in applied:
            if change.dispatches:
                sent = message.envelope.event_timestamp.ToNanoseconds() / 1e9
                waited = max(now - sent, 0.0)
                self._metrics.step_transition.labels(completion.step).observe(waited)
            if change.summary is not None:
                self._metrics.run_ended(change.summary)

    def _apply(
        self, progress: BatchProgress, completion: StepCompletion
    ) -> tuple[BatchProgress, ProgressWrite | None, RunChange | None]:
        """The batch's progress after ``completion``, what to write (None: a repeat) and the
        run change it makes (None: no active run waited for it)."""
        now = self._now()
        repeat = is_repeat(progress, completion)
        recorded = record_completion(progress, completion)
        if repeat:  # the batch's latest result already: its texts stay as they are stored
            recorded = RecordedCompletion(progress, recorded.result, {})
        change = complete_step(recorded.progress, completion, now)
        if change is None:
            if repeat:
                log.debug("repeated completion of %s/%s", completion.batch_id, completion.step)
                return progress, None, None
            log.info(
                "step %s of batch %s completed outside any active run; recorded",
                completion.step,
                completion.batch_id,
            )
            write = ProgressWrite(completion.batch_id, result=recorded.result, texts=recorded.texts)
            return recorded.progress, write, None
        commands, others = events.for_change(change, recorded.progress.batch, now, self._tracing)
        log.info(
            "run %s: step %s %s; dispatched %s; run %s",
            change.run.run_id,
            completion.step,
            "satisfied" if completion.satisfied else "unsatisfied",
            [d.step for d in change.dispatches],
            change.run.status.value,
        )
        write = ProgressWrite(
            completion.batch_id,
            run=change.run,
            transitions=change.transitions,
            commands=commands,
            result=None if repeat else recorded.result,
            texts=recorded.texts,
            events=others,
        )
        return with_run(recorded.progress, change.run), write, change
