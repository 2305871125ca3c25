"""The embedded mode's batch store: dicts under one lock, events handed to the in-memory bus.

Every write takes the lock, publishes its events, then applies its state change (plain dict
updates, which cannot fail), so a change and its events happen together. Nothing survives the
process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from batch_server.domain.errors import BatchNotFound, RunConflict
from batch_server.domain.essays import SpellcheckEssay, StoredEssay
from batch_server.domain.model import (
    Batch,
    BatchMetadata,
    BatchSummary,
    Essay,
    PipelineRun,
    StepResult,
    StepStatus,
    Transition,
)
from batch_server.domain.paging import UNFILTERED, BatchFilter, PageCursor
from batch_server.domain.run import BatchProgress
from batch_server.ports import DueStep, NewBatch, ProgressWrite, RetryRecord, StoredRequest
from mesh.events.bus import EventPublisher, OutgoingEvent


class MemoryBatchStore:
    """A ``BatchStore`` in memory, publishing through ``publisher`` (the in-memory bus)."""

    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher
        self._lock = asyncio.Lock()
        self._batches: dict[str, Batch] = {}
        self._requests: dict[str, tuple[str, str]] = {}  # request id -> (batch id, fingerprint)
        self._essay_places: dict[str, tuple[str, int]] = {}  # essay id -> (batch id, position)
        self._spellchecks: dict[str, SpellcheckEssay] = {}  # TriggerSpellcheck's, by essay id
        self._results: dict[str, dict[str, StepResult]] = {}
        self._runs: dict[str, PipelineRun] = {}
        self._batch_runs: dict[str, list[str]] = {}  # batch id -> run ids, oldest first
        self._transitions: dict[str, list[Transition]] = {}
        self._dispatched: set[tuple[str, str, int]] = set()  # (run id, step, attempt)
        self._retries: dict[tuple[str, str], RetryRecord] = {}  # (run id, request id)
        self._claims: dict[tuple[str, str, int], datetime] = {}  # due step -> claimed at

    # --- batches ------------------------------------------------------------------------

    async def create_batch(self, new: NewBatch, events: Sequence[OutgoingEvent]) -> StoredRequest:
        async with self._lock:
            known = self._requests.get(new.request_id)
            if known is not None:
                return StoredRequest(self._batches[known[0]], known[1])
            await self._publisher.publish_many(events)
            batch = new.batch
            self._batches[batch.batch_id] = batch
            self._requests[new.request_id] = (batch.batch_id, new.fingerprint)
            self._results[batch.batch_id] = {}
            self._batch_runs[batch.batch_id] = []
            self._essay_places.update(
                (e.essay_id, (batch.batch_id, position)) for position, e in enumerate(batch.essays)
            )
            return StoredRequest(batch, new.fingerprint)

    async def batch_for_request(self, request_id: str) -> StoredRequest | None:
        known = self._requests.get(request_id)
        if known is None:
            return None
        return StoredRequest(self._batches[known[0]], known[1])

    async def get_batch(self, batch_id: str) -> Batch:
        try:
            return self._batches[batch_id]
        except KeyError:
            raise BatchNotFound(batch_id) from None

    async def update_metadata(
        self, batch_id: str, expected: BatchMetadata, metadata: BatchMetadata
    ) -> Batch | None:
        async with self._lock:
            batch = await self.get_batch(batch_id)
            if batch.metadata != expected:
                return None
            self._batches[batch_id] = dataclasses.replace(batch, metadata=metadata)
            return self._batches[batch_id]

    async def list_batches(
        self, limit: int, after: PageCursor | None, filters: BatchFilter = UNFILTERED
    ) -> list[BatchSummary]:
        ordered = sorted(
            self._batches.values(), key=lambda b: (b.created_at, b.batch_id), reverse=True
        )
        if after is not None:
            key = (after.created_at, after.batch_id)
            ordered = [b for b in ordered if (b.created_at, b.batch_id) < key]
        selected = (s for s in map(self._summary, ordered) if filters.matches(s))
        return list(itertools.islice(selected, limit))

    def _summary(self, batch: Batch) -> BatchSummary:
        runs = self._batch_runs.get(batch.batch_id) or []
        latest = self._runs[runs[-1]].status if runs else None
        meta = batch.metadata
        return BatchSummary(
            batch.batch_id, meta.name, len(batch.essays), batch.created_at, latest, meta.labels
        )

    # --- runs -----------------------------------------------------------------------------

    async def list_runs(self, batch_id: str) -> list[PipelineRun]:
        return [self._runs[r] for r in reversed(self._batch_runs.get(batch_id, []))]

    async def get_run(self, run_id: str) -> PipelineRun | None:
        return self._runs.get(run_id)

    async def run_for_request(self, batch_id: str, request_id: str) -> PipelineRun | None:
        return next(
            (
                self._runs[r]
                for r in self._batch_runs.get(batch_id, [])
                if self._runs[r].request_id == request_id
            ),
            None,
        )

    async def transitions_after(self, run_id: str, seq: int) -> list[Transition]:
        return [t for t in self._transitions.get(run_id, []) if t.seq > seq]

    async def add_spellcheck_essay(
        self, essay: SpellcheckEssay, events: Sequence[OutgoingEvent]
    ) -> None:
        async with self._lock:
            await self._publisher.publish_many(events)
            self._spellchecks[essay.essay_id] = essay

    async def find_essay(self, essay_id: str) -> StoredEssay | None:
        place = self._essay_places.get(essay_id)
        if place is not None:
            batch_id, position = place
            return StoredEssay(batch_id, position, self._batches[batch_id].essays[position])
        single = self._spellchecks.get(essay_id)
        if single is None:
            return None
        return StoredEssay("", 0, Essay(essay_id, "", single.storage_id, single.storage_id))

    async def list_essays(self, batch_id: str, limit: int, after: int) -> list[StoredEssay]:
        essays = (await self.get_batch(batch_id)).essays
        start = after + 1
        return [
            StoredEssay(batch_id, position, essay)
            for position, essay in enumerate(essays[start : start + limit], start)
        ]

    async def active_runs(self) -> tuple[int, datetime | None]:
        active = [run.created_at for run in self._runs.values() if not run.status.terminal]
        return len(active), min(active, default=None)

    async def retry_for_request(self, run_id: str, request_id: str) -> RetryRecord | None:
        return self._retries.get((run_id, request_id))

    async def claim_due(self, now: datetime, lease: float, limit: int) -> list[DueStep]:
        due = []
        for run in self._runs.values():
            if run.status.terminal:
                continue
            for step in run.steps:
                if step.status is not StepStatus.DISPATCHED or step.deadline is None:
                    continue
                key = (run.run_id, step.name, step.attempt)
                claimed = self._claims.get(key)
                if step.deadline <= now and (
                    claimed is None or (now - claimed).total_seconds() >= lease
                ):
                    due.append(DueStep(run.batch_id, run.run_id, step.name, step.attempt))
                    self._claims[key] = now
                if len(due) >= limit:
                    return due
        return due

    @asynccontextmanager
    async def progress(self) -> AsyncIterator[_MemoryUnit]:
        async with self._lock:
            unit = _MemoryUnit(self)
            yield unit
            await self._commit(unit.writes)

    # --- used by _MemoryUnit --------------------------------------------------------------

    def _progress(self, batch_id: str) -> BatchProgress | None:
        batch = self._batches.get(batch_id)
        if batch is None:
            return None
        active = next(
            (
                self._runs[r]
                for r in self._batch_runs[batch_id]
                if not self._runs[r].status.terminal
            ),
            None,
        )
        return BatchProgress(batch, dict(self._results[batch_id]), active)

    def _active_run_id(self, batch_id: str) -> str | None:
        for run_id in self._batch_runs.get(batch_id, []):
            if not self._runs[run_id].status.terminal:
                return run_id
        return None

    async def _commit(self, writes: Sequence[ProgressWrite]) -> None:
        events: list[OutgoingEvent] = []
        dispatched = set(self._dispatched)
        for write in writes:
            for dispatch, event in write.commands:
                key = (dispatch.run_id, dispatch.step, dispatch.attempt)
                if key not in dispatched:
                    dispatched.add(key)
                    events.append(event)
            events.extend(write.events)
        await self._publisher.publish_many(events)
        self._dispatched = dispatched
        for write in writes:
            self._apply(write)

    def _apply(self, write: ProgressWrite) -> None:
        batch_id = write.batch_id
        if write.texts:
            batch = self._batches[batch_id]
            essays = tuple(
                e._replace(current_storage_id=write.texts[e.essay_id])
                if e.essay_id in write.texts
                else e
                for e in batch.essays
            )
            self._batches[batch_id] = dataclasses.replace(batch, essays=essays)
        if write.result is not None:
            self._results[batch_id][write.result.step] = write.result
        if write.run is not None:
            run = write.run
            if run.run_id not in self._runs:
                self._batch_runs[batch_id].append(run.run_id)
            self._runs[run.run_id] = run
            self._transitions.setdefault(run.run_id, []).extend(write.transitions)
        if write.retry is not None:
            self._retries[write.retry.run_id, write.retry.request_id] = write.retry


class _MemoryUnit:
    """A ``ProgressUnit`` of the memory store: reads committed state, stages writes."""

    def __init__(self, store: MemoryBatchStore) -> None:
        self._store = store
        self.writes: list[ProgressWrite] = []
        self._new_runs: dict[str, str] = {}  # batch id -> run id created in this unit

    async def load(self, batch_ids: Sequence[str]) -> dict[str, BatchProgress]:
        found = {b: self._store._progress(b) for b in dict.fromkeys(batch_ids)}
        return {b: p for b, p in found.items() if p is not None}

    async def run_for_request(self, batch_id: str, request_id: str) -> PipelineRun | None:
        return await self._store.run_for_request(batch_id, request_id)

    async def get_run(self, run_id: str) -> PipelineRun | None:
        return await self._store.get_run(run_id)

    def settle(self, progress: BatchProgress) -> None:
        """Nothing to keep: this store holds every batch's progress."""

    async def save(self, write: ProgressWrite) -> None:
        if write.run is not None and (write.new_run or write.retry is not None):
            active = self._new_runs.get(write.batch_id) or self._store._active_run_id(
                write.batch_id
            )
            if active is not None and active != write.run.run_id:
                raise RunConflict(write.batch_id, active)
            if not write.run.status.terminal:
                self._new_runs[write.batch_id] = write.run.run_id
        self.writes.append(write)
