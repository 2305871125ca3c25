"""The BatchService's application service: one method per RPC, over the stores and the conductor.

Idempotency keys:

- CreateBatch: ``request_id`` (global). A repeat returns the batch the key created; the same key
  with a different request (essays or metadata) is ``RequestIdReused``. Without a key nothing is
  deduplicated.
  The fingerprint is of the request, not of the batch: after UpdateBatch, a retry of the original
  request still returns the batch (as it is now).
- StartPipeline: (``batch_id``, ``request_id``). A repeat returns the run the key started (whatever
  its status now); the same key for another pipeline is ``RequestIdReused``.

One active run per batch: while a run is pending or running, StartPipeline fails with
``RunConflict`` (ABORTED) naming it. The check runs before the conductor is asked (so a doomed
call emits no PhaseSkipped) and again under the batch's lock when the run is stored; the
database's partial unique index is the final word.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from batch_server import events
from batch_server.conductor import Conductor
from batch_server.control import Retried, RunControl
from batch_server.domain.errors import RequestIdReused, RunConflict, RunNotFound
from batch_server.domain.essays import EssayCursor, EssayDetail, EssayView, SpellcheckEssay
from batch_server.domain.identity import batch_fingerprint, new_id
from batch_server.domain.model import (
    Batch,
    BatchMetadata,
    BatchSummary,
    Essay,
    EssayInput,
    MetadataUpdate,
    PipelineRun,
)
from batch_server.domain.paging import UNFILTERED, BatchFilter, PageCursor
from batch_server.domain.run import apply_transition, start_run, with_run
from batch_server.essays import EssayPage, EssayReader
from batch_server.metrics import BatchMetrics
from batch_server.ports import BatchStore, ContentStore, NewBatch, ProgressWrite
from batch_server.watch import ProgressFeed
from mesh import correlation
from mesh.errors import BackendUnavailable
from mesh.tracing.provider import OFF, Tracing

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
UPDATE_ATTEMPTS = 50  # UpdateBatch: races it may lose to concurrent updates before it gives up


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SpellcheckTriggered:
    essay_id: str
    correlation_id: str
    storage_id: str


@dataclass(frozen=True, slots=True)
class BatchStatus:
    batch: Batch
    runs: tuple[PipelineRun, ...]  # newest first


@dataclass(frozen=True, slots=True)
class BatchPage:
    batches: tuple[BatchSummary, ...]
    next_cursor: PageCursor | None


@dataclass(frozen=True, slots=True)
class RunUpdate:
    """A watched run as of one change; ``changed_step`` is empty for the first update."""

    run: PipelineRun
    changed_step: str


class BatchService:
    """Batches of essays and the pipeline runs over them."""

    def __init__(
        self,
        store: BatchStore,
        content: ContentStore,
        conductor: Conductor,
        feed: ProgressFeed,
        *,
        clock: Clock = utc_now,
        metrics: BatchMetrics | None = None,
        tracing: Tracing = OFF,
    ) -> None:
        self._store = store
        self._content = content
        self._conductor = conductor
        self._feed = feed
        self._now = clock
        self._metrics = metrics
        self._tracing = tracing
        self._control = RunControl(store, conductor, feed, clock, metrics=metrics, tracing=tracing)
        self._essays = EssayReader(store, content, conductor)

    async def trigger_spellcheck(self, text: str, language: str) -> SpellcheckTriggered:
        """Store the text, then record the essay (readable by GetEssay) with its
        EssaySpellcheckRequested."""
        essay_id = new_id()
        cid = correlation.current()
        [storage_id] = await self._content.put_many([text])
        essay = SpellcheckEssay(essay_id, storage_id, language, self._now())
        event = events.spellcheck_requested(essay_id, storage_id, language, cid, essay.created_at)
        await self._store.add_spellcheck_essay(essay, [event])
        log.info("spellcheck requested for essay %s (text %s)", essay_id, storage_id)
        return SpellcheckTriggered(essay_id, cid, storage_id)

    async def create_batch(
        self, request_id: str, essays: Sequence[EssayInput], metadata: BatchMetadata
    ) -> Batch:
        """Register the batch with the conductor (which refuses unknown flags), store the texts,
        then store the batch with its BatchCreated event. Nothing is stored if the conductor
        refuses the batch or cannot be reached, and nothing in the batch store if the texts
        cannot be stored."""
        fingerprint = batch_fingerprint(essays, metadata)
        if request_id:
            known = await self._store.batch_for_request(request_id)
            if known is not None:
                return _same_batch(request_id, fingerprint, known.fingerprint, known.batch)
        else:
            request_id = new_id()
        draft = Batch(
            batch_id=new_id(),
            essays=tuple(Essay(new_id(), e.client_ref, "", "") for e in essays),
            metadata=metadata,
            created_at=self._now(),
        )
        await self._conductor.register(draft)  # ids and flags only: no text is stored yet
        storage_ids = await self._content.put_many([e.text for e in essays])
        batch = dataclasses.replace(
            draft,
            essays=tuple(
                e._replace(original_storage_id=sid, current_storage_id=sid)
                for e, sid in zip(draft.essays, storage_ids, strict=True)
            ),
        )
        created = events.batch_created(batch, correlation.current())
        stored = await self._store.create_batch(NewBatch(batch, request_id, fingerprint), [created])
        if stored.batch.batch_id == batch.batch_id:
            log.info("created batch %s with %d essays", batch.batch_id, len(batch.essays))
        return _same_batch(request_id, fingerprint, stored.fingerprint, stored.batch)

    async def update_batch(self, batch_id: str, update: MetadataUpdate) -> Batch:
        """Apply ``update`` to the batch's metadata; new flags are registered with the conductor
        (which refuses unknown ones) before the batch is stored with them.

        Idempotent: the same update again leaves the same batch. The store writes only over the
        metadata this call read, so of two concurrent updates the one that lost reads the winner's
        metadata, registers again and writes: the conductor's flags end as the batch's. A batch
        updated by others that often in a row is UNAVAILABLE (retry).
        """
        for _ in range(UPDATE_ATTEMPTS):
            batch = await self._store.get_batch(batch_id)
            metadata = update.apply(batch.metadata)
            if "flags" in update.fields:
                await self._conductor.register(dataclasses.replace(batch, metadata=metadata))
            updated = await self._store.update_metadata(batch_id, batch.metadata, metadata)
            if updated is not None:
                log.info("updated %s of batch %s", sorted(update.fields), batch_id)
                return updated
        raise BackendUnavailable("batch-service", f"batch {batch_id} is being updated concurrently")

    async def start_pipeline(self, batch_id: str, pipeline: str, request_id: str) -> PipelineRun:
        """Resolve ``pipeline`` with the conductor, store the run and dispatch its first steps."""
        batch = await self._store.get_batch(batch_id)
        if request_id:
            existing = await self._store.run_for_request(batch_id, request_id)
            if existing is not None:
                return _same_run(request_id, pipeline, existing)
        else:
            request_id = new_id()
        active = next(
            (r for r in await self._store.list_runs(batch_id) if not r.status.terminal), None
        )
        if active is not None:
            raise RunConflict(batch_id, active.run_id)
        await self._conductor.register(batch)  # idempotent; heals a conductor that forgot it
        resolution = await self._conductor.resolve(batch, pipeline)
        for plan in resolution.steps:
            events.command_kind(plan.name, plan.command)  # fail before storing anything
        now = self._now()
        async with self._store.progress() as unit:
            progress = (await unit.load([batch_id]))[batch_id]
            existing = await unit.run_for_request(batch_id, request_id)
            if existing is not None:
                return _same_run(request_id, pipeline, existing)
            change = start_run(
                progress,
                run_id=new_id(),
                pipeline=pipeline,
                resolution=resolution,
                request_id=request_id,
                correlation_id=correlation.current(),
                now=now,
            )
            commands, others = events.for_change(change, progress.batch, now, self._tracing)
            await unit.save(
                ProgressWrite(
                    batch_id,
                    run=change.run,
                    new_run=True,
                    transitions=change.transitions,
                    commands=commands,
                    events=others,
                )
            )
            unit.settle(with_run(progress, change.run))
        self._feed.notify([change.run.run_id])
        if change.summary is not None and self._metrics is not None:
            self._metrics.run_ended(change.summary)  # it ended as it started
        log.info(
            "started run %s of %s on batch %s: dispatched %s, pruned %s",
            change.run.run_id,
            pipeline,
            batch_id,
            [d.step for d in change.dispatches],
            list(change.run.pruned_steps),
        )
        return change.run

    async def cancel_run(self, batch_id: str, run_id: str, reason: str) -> PipelineRun:
        """Cancel an active run (``batch_server.control``)."""
        return await self._control.cancel(batch_id, run_id, reason)

    async def retry_run(
        self, batch_id: str, run_id: str, steps: Sequence[str], request_id: str
    ) -> Retried:
        """Start the next attempt of a finished run (``batch_server.control``)."""
        return await self._control.retry(batch_id, run_id, steps, request_id)

    async def batch_status(self, batch_id: str) -> BatchStatus:
        batch = await self._store.get_batch(batch_id)
        return BatchStatus(batch, tuple(await self._store.list_runs(batch_id)))

    async def list_batches(
        self, page_size: int, after: PageCursor | None, filters: BatchFilter = UNFILTERED
    ) -> BatchPage:
        found = await self._store.list_batches(page_size + 1, after, filters)
        page = tuple(found[:page_size])
        more = len(found) > page_size
        cursor = PageCursor(page[-1].created_at, page[-1].batch_id) if more and page else None
        return BatchPage(page, cursor)

    async def get_essay(self, essay_id: str, batch_id: str, view: EssayView) -> EssayDetail:
        """One essay (``batch_server.essays``)."""
        return await self._essays.get(essay_id, batch_id, view)

    async def list_essays(
        self, batch_id: str, page_size: int, after: EssayCursor | None, view: EssayView
    ) -> EssayPage:
        """A page of a batch's essays (``batch_server.essays``)."""
        return await self._essays.page(batch_id, page_size, after, view)

    async def watch(self, batch_id: str, run_id: str) -> AsyncIterator[RunUpdate]:
        """The run's state now, then every transition in order, until it ends.

        Ends with ``BackendUnavailable`` when the server shuts down first (the client retries
        on another replica and gets the state at once).
        """
        watched = await self._watched_run(batch_id, run_id)
        with self._feed.subscribe(watched.run_id) as wake:
            run = await self._store.get_run(watched.run_id) or watched  # read after subscribing
            yield RunUpdate(run, "")
            while not run.status.terminal:
                await self._feed.wait(wake)
                if self._feed.closed:
                    raise BackendUnavailable("batch-service", "server shutting down")
                for transition in await self._store.transitions_after(run.run_id, run.version):
                    run = apply_transition(run, transition)
                    yield RunUpdate(run, transition.step)

    async def _watched_run(self, batch_id: str, run_id: str) -> PipelineRun:
        await self._store.get_batch(batch_id)
        if run_id:
            run = await self._store.get_run(run_id)
            if run is None or run.batch_id != batch_id:
                raise RunNotFound(batch_id, run_id)
            return run
        runs = await self._store.list_runs(batch_id)
        if not runs:
            raise RunNotFound(batch_id)
        return runs[0]


def _same_batch(request_id: str, wanted: str, stored: str, batch: Batch) -> Batch:
    if wanted != stored:
        raise RequestIdReused(request_id, f"another CreateBatch request (batch {batch.batch_id})")
    return batch


def _same_run(request_id: str, pipeline: str, run: PipelineRun) -> PipelineRun:
    if run.pipeline != pipeline:
        raise RequestIdReused(request_id, f"pipeline '{run.pipeline}' (run {run.run_id})")
    return run
