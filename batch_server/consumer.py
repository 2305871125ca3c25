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
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from batch_server import events
from batch_server.domain.errors import BatchNotFound, InvalidCompletion
from batch_server.domain.model import EssayRef, StepCompletion
from batch_server.domain.run import (
    BatchProgress,
    complete_step,
    is_repeat,
    record_completion,
)
from batch_server.ports import BatchStore, ProgressWrite
from batch_server.service import Clock, utc_now
from batch_server.watch import ProgressFeed
from generated.huleedu.events.v1 import events_pb2
from mesh import correlation
from mesh.events.bus import Message, Rejection
from mesh.events.topics import EventKind

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
    )


class CompletionHandler:
    """A ``mesh.events.bus.BatchHandler`` advancing runs on BatchStepCompleted facts."""

    def __init__(self, store: BatchStore, feed: ProgressFeed, *, clock: Clock = utc_now) -> None:
        self._store = store
        self._feed = feed
        self._now = clock

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
        async with self._store.progress() as unit:
            progress = await unit.load([c.batch_id for _, c in parsed])
            for message, completion in parsed:
                current = progress.get(completion.batch_id)
                if current is None:
                    rejections.append(Rejection(message, BatchNotFound(completion.batch_id)))
                    continue
                with correlation.bound(message.envelope.correlation_id or correlation.new()):
                    try:
                        after, write = self._apply(current, completion)
                    except InvalidCompletion as exc:
                        rejections.append(Rejection(message, exc))
                        continue
                if write is None:
                    continue
                await unit.save(write)
                progress[completion.batch_id] = after
                if write.run is not None:
                    changed.append(write.run.run_id)
        self._feed.notify(changed)
        return rejections

    def _apply(
        self, progress: BatchProgress, completion: StepCompletion
    ) -> tuple[BatchProgress, ProgressWrite | None]:
        """The batch's progress after ``completion``, and what to write (None: a repeat)."""
        now = self._now()
        repeat = is_repeat(progress, completion)
        recorded = record_completion(progress, completion)
        change = complete_step(recorded.progress, completion, now)
        if change is None:
            if repeat:
                log.debug("repeated completion of %s/%s", completion.batch_id, completion.step)
                return progress, None
            log.info(
                "step %s of batch %s completed outside any active run; recorded",
                completion.step,
                completion.batch_id,
            )
            return recorded.progress, ProgressWrite(
                completion.batch_id, result=recorded.result, texts=recorded.texts
            )
        commands, others = events.for_change(change, recorded.progress.batch, now)
        active = None if change.run.status.terminal else change.run
        log.info(
            "run %s: step %s %s; dispatched %s; run %s",
            change.run.run_id,
            completion.step,
            "satisfied" if completion.satisfied else "unsatisfied",
            [d.step for d in change.dispatches],
            change.run.status.value,
        )
        return dataclasses.replace(recorded.progress, active_run=active), ProgressWrite(
            completion.batch_id,
            run=change.run,
            transitions=change.transitions,
            commands=commands,
            result=None if repeat else recorded.result,
            texts={} if repeat else recorded.texts,
            events=others,
        )
