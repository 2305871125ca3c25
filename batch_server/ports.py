"""The seams of the BatchService: content storage and batch storage, with what crosses them.

Each Protocol has an in-memory implementation (embedded mode, service tests) and a real one
(PostgreSQL; for content also an HTTP Content Service). Every write of a ``BatchStore`` commits
its state change and the events it causes together: in PostgreSQL in one transaction through the
outbox, in memory under one lock, handing the events to the in-memory bus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from batch_server.domain.essays import SpellcheckEssay, StoredEssay
from batch_server.domain.model import (
    Batch,
    BatchMetadata,
    BatchSummary,
    Dispatch,
    PipelineRun,
    StepResult,
    Transition,
)
from batch_server.domain.paging import UNFILTERED, BatchFilter, PageCursor
from batch_server.domain.run import BatchProgress
from mesh.events.bus import OutgoingEvent


class ContentStore(Protocol):
    """Stores essay texts under generated storage ids.

    Raises ``mesh.errors.BackendUnavailable`` when the storage is down and
    ``ContentNotFound`` for an unknown id.
    """

    async def put_many(self, texts: Sequence[str]) -> list[str]:
        """Store every text; return their storage ids in order (all or an error)."""
        ...

    async def get(self, storage_id: str) -> str: ...


@dataclass(frozen=True, slots=True)
class NewBatch:
    """A batch to create under an idempotency key, with its request's fingerprint."""

    batch: Batch
    request_id: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """The batch a CreateBatch request id created, and that request's fingerprint."""

    batch: Batch
    fingerprint: str


@dataclass(frozen=True, slots=True)
class RetryRecord:
    """A RetryRun that started ``attempt`` of a run: its key, the steps it was limited to, and
    what it sent again (step -> essay count; 0 for a step waiting on a dependency)."""

    run_id: str
    attempt: int
    request_id: str
    steps: tuple[str, ...]
    retried: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class DueStep:
    """A dispatched step whose deadline passed: the conductor is to time it out."""

    batch_id: str
    run_id: str
    step: str
    attempt: int


@dataclass(frozen=True, slots=True)
class ProgressWrite:
    """Everything one change of a batch's progress writes, atomically.

    ``commands`` are recorded under the unique key (run id, step): a command whose dispatch is
    already recorded is not published again. ``events`` are published as they are.
    """

    batch_id: str
    run: PipelineRun | None = None
    new_run: bool = False
    transitions: tuple[Transition, ...] = ()
    commands: tuple[tuple[Dispatch, OutgoingEvent], ...] = ()
    result: StepResult | None = None
    texts: Mapping[str, str] = field(default_factory=dict)  # essay id -> latest storage id
    events: tuple[OutgoingEvent, ...] = ()
    retry: RetryRecord | None = None


class ProgressUnit(Protocol):
    """One transaction over the progress of some batches, which stay locked until it ends."""

    async def load(self, batch_ids: Sequence[str]) -> dict[str, BatchProgress]:
        """Lock and read these batches; unknown ids are absent from the answer."""
        ...

    async def run_for_request(self, batch_id: str, request_id: str) -> PipelineRun | None: ...

    async def get_run(self, run_id: str) -> PipelineRun | None: ...

    async def save(self, write: ProgressWrite) -> None:
        """Stage a write; everything staged commits when the unit ends without an error.

        Raises ``RunConflict`` when a run it starts (or retries) would be a second active run of
        its batch.
        """
        ...

    def settle(self, progress: BatchProgress) -> None:
        """The batch's progress once what this unit staged commits (what a later ``load`` of it
        would read): a store may keep it and advance the batch's next unit on it. A batch
        loaded but not settled is read again by its next unit."""
        ...


class BatchStore(Protocol):
    """Batches, essays (of batches and of TriggerSpellcheck), pipeline runs, their transitions
    and dispatch records.

    Raises ``mesh.errors.BackendUnavailable`` when the storage is down.
    """

    async def create_batch(self, new: NewBatch, events: Sequence[OutgoingEvent]) -> StoredRequest:
        """Create the batch and publish ``events``; for a known request id, return the batch it
        created instead, with its fingerprint (and publish nothing)."""
        ...

    async def batch_for_request(self, request_id: str) -> StoredRequest | None: ...

    async def get_batch(self, batch_id: str) -> Batch:
        """The batch; ``BatchNotFound`` if there is none."""
        ...

    async def update_metadata(
        self, batch_id: str, expected: BatchMetadata, metadata: BatchMetadata
    ) -> Batch | None:
        """Replace the batch's metadata with ``metadata`` if it still is ``expected`` and return
        the batch; None when another update changed it first. ``BatchNotFound`` if there is no
        such batch."""
        ...

    async def list_batches(
        self, limit: int, after: PageCursor | None, filters: BatchFilter = UNFILTERED
    ) -> list[BatchSummary]:
        """Up to ``limit`` batches that ``filters`` selects, newest first, strictly after
        ``after``."""
        ...

    async def list_runs(self, batch_id: str) -> list[PipelineRun]:
        """The batch's runs, newest first."""
        ...

    async def get_run(self, run_id: str) -> PipelineRun | None: ...

    async def run_for_request(self, batch_id: str, request_id: str) -> PipelineRun | None: ...

    async def transitions_after(self, run_id: str, seq: int) -> list[Transition]:
        """The run's transitions numbered above ``seq``, in order."""
        ...

    async def add_spellcheck_essay(
        self, essay: SpellcheckEssay, events: Sequence[OutgoingEvent]
    ) -> None:
        """Record an essay of TriggerSpellcheck and publish ``events`` (its request) with it."""
        ...

    async def find_essay(self, essay_id: str) -> StoredEssay | None:
        """The essay with that id, of a batch or of TriggerSpellcheck; None if there is none."""
        ...

    async def list_essays(self, batch_id: str, limit: int, after: int) -> list[StoredEssay]:
        """Up to ``limit`` of the batch's essays in batch order, those at positions after
        ``after`` (-1: from the first); ``BatchNotFound`` if there is no such batch."""
        ...

    async def active_runs(self) -> tuple[int, datetime | None]:
        """How many runs are pending or running, and when the oldest of them started."""
        ...

    async def retry_for_request(self, run_id: str, request_id: str) -> RetryRecord | None:
        """The retry of the run made under ``request_id``, if any."""
        ...

    async def claim_due(self, now: datetime, lease: float, limit: int) -> list[DueStep]:
        """Up to ``limit`` dispatched steps of active runs whose deadline is at or before
        ``now``, each claimed for ``lease`` seconds (a step claimed less than ``lease`` seconds
        ago, by any replica, is left out)."""
        ...

    def progress(self) -> AbstractAsyncContextManager[ProgressUnit]:
        """A unit of work over batches' progress (see ``ProgressUnit``)."""
        ...
