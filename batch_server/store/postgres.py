"""The real mode's batch store: PostgreSQL, every change and its events in one transaction.

Events go into ``event_outbox`` (``mesh.postgres.outbox.enqueue``) in the same transaction as
the state change that causes them; the relay publishes them with their ids. Concurrency control:

- a unit of progress (``progress()``) locks the batch rows it loads (``FOR UPDATE``, in id order,
  so two units never deadlock), which serialises StartPipeline and completion handling per batch,
  and stamps them: the progress a unit settled is kept and used by the next unit only while the
  stamp is still its own (``sql/0006_progress_stamps.sql``, ``PostgresBatchStore``);
- the partial unique index ``pipeline_runs_one_active`` makes a second active run of a batch
  impossible whatever the code above does: a violation becomes ``RunConflict``;
- ``run_dispatches`` has the primary key (run_id, step, attempt): a command whose dispatch is
  already recorded is never enqueued again; outbox event ids are deterministic as a second guard;
- a retry that would make a run active while another run of the batch is (the same partial
  unique index) becomes ``RunConflict`` too; ``run_retries`` keeps each retry's request id;
- the deadline watch claims due steps with ``UPDATE ... RETURNING`` (``expiring_since``: a lease,
  so replicas do not ask twice at once and a crashed one's claim is taken over);
- CreateBatch inserts under the unique ``request_id``; a concurrent twin waits for the first and
  returns its batch.

Each committed change of a run also sends ``NOTIFY batch_run_progress, '<run_id>'`` so watchers on
every replica wake at once (they poll as well).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import operator
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from batch_server.domain.errors import BatchNotFound, RunConflict
from batch_server.domain.essays import SpellcheckEssay, StoredEssay
from batch_server.domain.model import (
    Batch,
    BatchMetadata,
    BatchSummary,
    PipelineRun,
    RunStep,
    Transition,
)
from batch_server.domain.paging import UNFILTERED, BatchFilter, PageCursor
from batch_server.domain.run import BatchProgress
from batch_server.metrics import BatchMetrics
from batch_server.ports import DueStep, NewBatch, ProgressWrite, RetryRecord, StoredRequest
from batch_server.store import rows
from batch_server.store.errors import translated
from mesh.events.bus import OutgoingEvent
from mesh.postgres import outbox
from mesh.postgres.kept import KEPT_ESSAYS, Kept

log = logging.getLogger(__name__)

MIGRATIONS = {"mesh": "mesh.postgres.sql", "batch": "batch_server.store.sql"}
PROGRESS_CHANNEL = "batch_run_progress"
ACTIVE_RUN_INDEX = "pipeline_runs_one_active"

# A transaction that marks itself stamped (``batch.stamped``) stamps the batches it writes
# itself; the triggers of sql/0006_progress_stamps.sql stamp for any other writer.
_STAMPED = "set_config('batch.stamped', 'on', true)"
_INSERT_BATCH = f"""
INSERT INTO batches (batch_id, request_id, fingerprint, name, course_code, language, flags,
                     labels, essay_count, created_at, progress_stamp)
SELECT $1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10, nextval('batch_progress_stamps')
  FROM {_STAMPED} AS stamped
ON CONFLICT (request_id) DO NOTHING
RETURNING batch_id
"""
_INSERT_ESSAYS = """
INSERT INTO batch_essays (batch_id, position, essay_id, client_ref, original_storage_id,
                          current_storage_id)
SELECT $1, t.position, t.essay_id, t.client_ref, t.storage_id, t.storage_id
  FROM unnest($2::int[], $3::text[], $4::text[], $5::text[])
       AS t(position, essay_id, client_ref, storage_id)
"""
_BATCH_COLUMNS = "batch_id, name, course_code, language, flags, labels, created_at"
_SELECT_BATCH = f"SELECT {_BATCH_COLUMNS} FROM batches WHERE batch_id = $1"
# Lock the batches (in id order: two units never deadlock) and stamp them; ``seen`` is the
# stamp each had, the one a kept progress must match.
_LOCK_BATCHES = f"""
WITH locked AS (
    SELECT batch_id, progress_stamp FROM batches
     WHERE batch_id = ANY($1::text[]) ORDER BY batch_id FOR UPDATE
)
UPDATE batches b SET progress_stamp = nextval('batch_progress_stamps')
  FROM locked, {_STAMPED} AS stamped
 WHERE b.batch_id = locked.batch_id
RETURNING b.batch_id, b.name, b.course_code, b.language, b.flags, b.labels, b.created_at,
          locked.progress_stamp AS seen, b.progress_stamp AS stamp
"""
_SELECT_ESSAYS = """
SELECT batch_id, essay_id, client_ref, original_storage_id, current_storage_id
  FROM batch_essays WHERE batch_id = ANY($1::text[]) ORDER BY batch_id, position
"""
_SELECT_REQUEST = "SELECT batch_id, fingerprint FROM batches WHERE request_id = $1"
_UPDATE_METADATA = """
UPDATE batches SET name = $6, course_code = $7, flags = $8::jsonb, labels = $9::jsonb
 WHERE batch_id = $1 AND name = $2 AND course_code = $3 AND flags = $4::jsonb
   AND labels = $5::jsonb
RETURNING batch_id
"""
# One index range scan over batches_listing, newest first, with each batch's newest run read by
# one probe of pipeline_runs_newest (an index-only scan); a label filter may use batches_labels.
# $7: the statuses wanted, '' for "no run"; NULL: any.
_LIST_BATCHES = """
SELECT b.batch_id, b.name, b.essay_count, b.created_at, b.labels, newest.status AS latest_status
  FROM batches b
  LEFT JOIN LATERAL (
       SELECT r.status FROM pipeline_runs r WHERE r.batch_id = b.batch_id
        ORDER BY r.created_at DESC, r.run_id DESC LIMIT 1) AS newest ON true
 WHERE ($2::timestamptz IS NULL OR (b.created_at, b.batch_id) < ($2::timestamptz, $3::text))
   AND ($4::timestamptz IS NULL OR b.created_at >= $4::timestamptz)
   AND ($5::timestamptz IS NULL OR b.created_at < $5::timestamptz)
   AND b.labels @> $6::jsonb
   AND ($7::text[] IS NULL OR coalesce(newest.status, '') = ANY($7::text[]))
 ORDER BY b.created_at DESC, b.batch_id DESC
 LIMIT $1
"""
_SELECT_RESULTS = """
SELECT batch_id, step, satisfied, succeeded, failed, total, succeeded_essays
  FROM batch_step_results WHERE batch_id = ANY($1::text[])
"""
_RUN_COLUMNS = (
    "run_id, batch_id, request_id, pipeline, status, definition_version, correlation_id, "
    "version, completed_steps, created_at, finished_at, attempt, cancel_reason"
)
_SELECT_RUN = f"SELECT {_RUN_COLUMNS} FROM pipeline_runs WHERE run_id = $1"
_SELECT_RUNS_OF_BATCH = (
    f"SELECT {_RUN_COLUMNS} FROM pipeline_runs WHERE batch_id = $1 "
    "ORDER BY created_at DESC, run_id DESC"
)
_SELECT_RUN_FOR_REQUEST = (
    f"SELECT {_RUN_COLUMNS} FROM pipeline_runs WHERE batch_id = $1 AND request_id = $2"
)
_SELECT_ACTIVE_RUNS = (
    f"SELECT {_RUN_COLUMNS} FROM pipeline_runs WHERE batch_id = ANY($1::text[]) "
    "AND status IN ('pending', 'running')"
)
_SELECT_STEPS = """
SELECT run_id, step, command, depends_on, status, succeeded, failed, total, essay_ids, attempt,
       timeout_seconds, deadline, timed_out, retry_essays
  FROM run_steps WHERE run_id = ANY($1::text[]) ORDER BY run_id, position
"""
_INSERT_RUN = """
INSERT INTO pipeline_runs (run_id, batch_id, request_id, pipeline, status, definition_version,
                           correlation_id, version, completed_steps, created_at, finished_at,
                           attempt, cancel_reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
"""
_UPDATE_RUN = """
UPDATE pipeline_runs SET status = $2, version = $3, completed_steps = $4, finished_at = $5,
                         attempt = $6, cancel_reason = $7
 WHERE run_id = $1
"""
_UPSERT_STEP = """
INSERT INTO run_steps (run_id, position, step, command, depends_on, status, succeeded, failed,
                       total, essay_ids, attempt, timeout_seconds, deadline, timed_out,
                       retry_essays)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (run_id, step) DO UPDATE
   SET status = EXCLUDED.status, succeeded = EXCLUDED.succeeded, failed = EXCLUDED.failed,
       total = EXCLUDED.total, essay_ids = EXCLUDED.essay_ids, attempt = EXCLUDED.attempt,
       deadline = EXCLUDED.deadline, timed_out = EXCLUDED.timed_out,
       retry_essays = EXCLUDED.retry_essays, expiring_since = NULL
"""
# The steps of a run whose essay lists PostgreSQL holds as they are: everything else (a list of
# a 10,000-essay batch is a large value, rewritten for nothing). "UPDATE n" counts the rows.
_UPDATE_STEPS = """
UPDATE run_steps s
   SET status = t.status, succeeded = t.succeeded, failed = t.failed, total = t.total,
       attempt = t.attempt, deadline = t.deadline, timed_out = t.timed_out, expiring_since = NULL
  FROM unnest($2::text[], $3::text[], $4::int[], $5::int[], $6::int[], $7::int[],
              $8::timestamptz[], $9::int[])
       AS t(step, status, succeeded, failed, total, attempt, deadline, timed_out)
 WHERE s.run_id = $1 AND s.step = t.step
"""
_INSERT_TRANSITION = """
INSERT INTO run_transitions (run_id, seq, step, step_status, succeeded, failed, total,
                             run_status, finished_at, attempt, step_attempt, timed_out,
                             deadline, cancel_reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
"""
_SELECT_TRANSITIONS = """
SELECT run_id, seq, step, step_status, succeeded, failed, total, run_status, finished_at,
       attempt, step_attempt, timed_out, deadline, cancel_reason
  FROM run_transitions WHERE run_id = $1 AND seq > $2 ORDER BY seq
"""
_RECORD_DISPATCHES = """
INSERT INTO run_dispatches (run_id, step, attempt, event_id, essay_count)
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::int[])
ON CONFLICT DO NOTHING
RETURNING run_id, step, attempt
"""
_INSERT_RETRY = """
INSERT INTO run_retries (run_id, attempt, request_id, steps, retried)
VALUES ($1, $2, $3, $4, $5::jsonb)
"""
_SELECT_RETRY = """
SELECT run_id, attempt, request_id, steps, retried FROM run_retries
 WHERE run_id = $1 AND request_id = $2
"""
# Dispatched steps (only active runs have any) past their deadline and not claimed within the
# lease, oldest deadline first: claimed.
_CLAIM_DUE = """
UPDATE run_steps s SET expiring_since = $1
  FROM pipeline_runs r
 WHERE s.run_id = r.run_id
   AND (s.run_id, s.step) IN (
       SELECT d.run_id, d.step FROM run_steps d
        WHERE d.status = 'dispatched' AND d.deadline <= $1
          AND (d.expiring_since IS NULL OR d.expiring_since <= $1 - make_interval(secs => $2))
        ORDER BY d.deadline LIMIT $3 FOR UPDATE SKIP LOCKED)
RETURNING r.batch_id, s.run_id, s.step, s.attempt
"""
_UPSERT_RESULT = """
INSERT INTO batch_step_results (batch_id, step, satisfied, succeeded, failed, total,
                                succeeded_essays)
VALUES ($1, $2, $3, $4, $5, $6, $7::json)
ON CONFLICT (batch_id, step) DO UPDATE
   SET satisfied = EXCLUDED.satisfied, succeeded = EXCLUDED.succeeded,
       failed = EXCLUDED.failed, total = EXCLUDED.total,
       succeeded_essays = EXCLUDED.succeeded_essays, recorded_at = now()
"""
_UPDATE_TEXTS = """
UPDATE batch_essays e SET current_storage_id = t.storage_id
  FROM unnest($2::text[], $3::text[]) AS t(essay_id, storage_id)
 WHERE e.batch_id = $1 AND e.essay_id = t.essay_id
"""
_NOTIFY = "SELECT pg_notify($1, $2)"
_BATCH_ID = operator.itemgetter("batch_id")
_ACTIVE_RUNS = """
SELECT count(*) AS n, min(created_at) AS oldest FROM pipeline_runs
 WHERE status IN ('pending', 'running')
"""

_ESSAY_COLUMNS = "essay_id, client_ref, original_storage_id, current_storage_id"
_FIND_ESSAY = f"""
SELECT batch_id, position, {_ESSAY_COLUMNS} FROM batch_essays WHERE essay_id = $1
UNION ALL
SELECT '', 0, essay_id, '', storage_id, storage_id FROM spellcheck_essays WHERE essay_id = $1
"""
# One row per essay of the page, or one row of NULLs when the batch has none there: no row at
# all means no such batch. One range scan of the primary key (batch_id, position).
_LIST_ESSAYS = f"""
SELECT b.batch_id, e.position, e.essay_id, e.client_ref, e.original_storage_id,
       e.current_storage_id
  FROM batches b
  LEFT JOIN LATERAL (
        SELECT position, {_ESSAY_COLUMNS} FROM batch_essays
         WHERE batch_id = b.batch_id AND position > $2
         ORDER BY position LIMIT $3
       ) e ON true
 WHERE b.batch_id = $1
 ORDER BY e.position
"""
_INSERT_SPELLCHECK = """
INSERT INTO spellcheck_essays (essay_id, storage_id, language, created_at) VALUES ($1, $2, $3, $4)
"""


class PostgresBatchStore:
    """A ``BatchStore`` over an asyncpg pool (owned by the caller).

    It keeps the progress its units settled and committed, up to ``kept_essays`` essays' worth
    of batches (``mesh.postgres.kept``; 0 keeps nothing): a unit that locks a batch whose stamp
    is still the one this store wrote advances on that progress instead of reading the batch's
    essays, results and active run again. ``metrics`` counts which it did.
    """

    def __init__(
        self, pool: Any, kept_essays: int = KEPT_ESSAYS, metrics: BatchMetrics | None = None
    ) -> None:
        self._pool = pool
        self._kept: Kept[_KeptProgress] = Kept(kept_essays)
        self._metrics = metrics or BatchMetrics(CollectorRegistry())

    # --- batches ------------------------------------------------------------------------

    async def create_batch(self, new: NewBatch, events: Sequence[OutgoingEvent]) -> StoredRequest:
        batch = new.batch
        meta = batch.metadata
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                _INSERT_BATCH,
                batch.batch_id,
                new.request_id,
                new.fingerprint,
                meta.name,
                meta.course_code,
                meta.language,
                json.dumps(dict(meta.flags)),
                json.dumps(dict(meta.labels)),
                len(batch.essays),
                batch.created_at,
            )
            if inserted is None:  # the request id is known: answer with its batch
                existing = await conn.fetchrow(_SELECT_REQUEST, new.request_id)
                return StoredRequest(
                    await _batch(conn, existing["batch_id"]), existing["fingerprint"]
                )
            await conn.execute(
                _INSERT_ESSAYS,
                batch.batch_id,
                list(range(len(batch.essays))),
                [e.essay_id for e in batch.essays],
                [e.client_ref for e in batch.essays],
                [e.original_storage_id for e in batch.essays],
            )
            await outbox.enqueue(conn, events)
        return StoredRequest(batch, new.fingerprint)

    async def batch_for_request(self, request_id: str) -> StoredRequest | None:
        async with translated(), self._pool.acquire() as conn:
            row = await conn.fetchrow(_SELECT_REQUEST, request_id)
            if row is None:
                return None
            return StoredRequest(await _batch(conn, row["batch_id"]), row["fingerprint"])

    async def get_batch(self, batch_id: str) -> Batch:
        async with translated(), self._pool.acquire() as conn:
            return await _batch(conn, batch_id)

    async def update_metadata(
        self, batch_id: str, expected: BatchMetadata, metadata: BatchMetadata
    ) -> Batch | None:
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            updated = await conn.fetchval(
                _UPDATE_METADATA,
                batch_id,
                *_metadata_columns(expected),
                *_metadata_columns(metadata),
            )
            batch = await _batch(conn, batch_id)  # BatchNotFound if there is none
            return batch if updated is not None else None

    async def list_batches(
        self, limit: int, after: PageCursor | None, filters: BatchFilter = UNFILTERED
    ) -> list[BatchSummary]:
        statuses = [s.value if s is not None else "" for s in filters.latest_run_statuses]
        async with translated():
            found = await self._pool.fetch(
                _LIST_BATCHES,
                limit,
                after.created_at if after else None,
                after.batch_id if after else None,
                filters.created_after,
                filters.created_before,
                json.dumps(dict(filters.labels)),
                sorted(statuses) or None,
            )
        return [rows.summary(r) for r in found]

    # --- runs -----------------------------------------------------------------------------

    async def list_runs(self, batch_id: str) -> list[PipelineRun]:
        async with translated(), self._pool.acquire() as conn, _snapshot(conn):
            return await _runs(conn, await conn.fetch(_SELECT_RUNS_OF_BATCH, batch_id))

    async def get_run(self, run_id: str) -> PipelineRun | None:
        async with translated(), self._pool.acquire() as conn, _snapshot(conn):
            found = await _runs(conn, await conn.fetch(_SELECT_RUN, run_id))
        return found[0] if found else None

    async def run_for_request(self, batch_id: str, request_id: str) -> PipelineRun | None:
        async with translated(), self._pool.acquire() as conn:
            return await _run_for_request(conn, batch_id, request_id)

    async def transitions_after(self, run_id: str, seq: int) -> list[Transition]:
        async with translated():
            found = await self._pool.fetch(_SELECT_TRANSITIONS, run_id, seq)
        return [rows.transition(r) for r in found]

    async def add_spellcheck_essay(
        self, essay: SpellcheckEssay, events: Sequence[OutgoingEvent]
    ) -> None:
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                _INSERT_SPELLCHECK,
                essay.essay_id,
                essay.storage_id,
                essay.language,
                essay.created_at,
            )
            await outbox.enqueue(conn, events)

    async def find_essay(self, essay_id: str) -> StoredEssay | None:
        async with translated():
            row = await self._pool.fetchrow(_FIND_ESSAY, essay_id)
        return rows.stored_essay(row) if row is not None else None

    async def list_essays(self, batch_id: str, limit: int, after: int) -> list[StoredEssay]:
        async with translated():
            found = await self._pool.fetch(_LIST_ESSAYS, batch_id, after, limit)
        if not found:
            raise BatchNotFound(batch_id)
        return [rows.stored_essay(r) for r in found if r["essay_id"] is not None]

    async def active_runs(self) -> tuple[int, datetime | None]:
        async with translated():
            row = await self._pool.fetchrow(_ACTIVE_RUNS)
        return int(row["n"]), row["oldest"]

    async def retry_for_request(self, run_id: str, request_id: str) -> RetryRecord | None:
        async with translated():
            row = await self._pool.fetchrow(_SELECT_RETRY, run_id, request_id)
        return rows.retry(row) if row is not None else None

    async def claim_due(self, now: datetime, lease: float, limit: int) -> list[DueStep]:
        async with translated():
            found = await self._pool.fetch(_CLAIM_DUE, now, lease, limit)
        return [DueStep(r["batch_id"], r["run_id"], r["step"], r["attempt"]) for r in found]

    @asynccontextmanager
    async def progress(self) -> AsyncIterator[_PostgresUnit]:
        async with translated(), self._pool.acquire() as conn:
            unit = _PostgresUnit(conn, self._kept, self._metrics)
            async with conn.transaction():
                yield unit
            unit.committed()


@dataclass(frozen=True, slots=True)
class _KeptProgress:
    """A batch's progress as a unit committed it (its metadata is read under the lock anew)."""

    progress: BatchProgress

    @property
    def essay_count(self) -> int:
        return len(self.progress.batch.essays)


class _PostgresUnit:
    """A ``ProgressUnit``: one transaction; loaded batches stay locked until it ends."""

    def __init__(self, conn: Any, kept: Kept[_KeptProgress], metrics: BatchMetrics) -> None:
        self._conn = conn
        self._kept = kept
        self._metrics = metrics
        self._stamps: dict[str, int] = {}  # batch id -> the stamp this unit wrote
        self._settled: dict[str, BatchProgress] = {}
        self._stored: dict[str, PipelineRun] = {}  # run id -> the run as PostgreSQL holds it

    async def load(self, batch_ids: Sequence[str]) -> dict[str, BatchProgress]:
        """Lock and stamp the batches; each one's progress is the one kept of it when the stamp
        it had is the kept one's, else read. What was kept of a batch is taken either way."""
        conn = self._conn
        batch_rows = sorted(await conn.fetch(_LOCK_BATCHES, sorted(set(batch_ids))), key=_BATCH_ID)
        if not batch_rows:
            return {}
        found: dict[str, BatchProgress] = {}
        for row in batch_rows:
            self._stamps[row["batch_id"]] = row["stamp"]
            kept = self._kept.take(row["batch_id"], row["seen"])
            if kept is not None:
                batch = dataclasses.replace(kept.progress.batch, metadata=rows.metadata(row))
                found[row["batch_id"]] = dataclasses.replace(kept.progress, batch=batch)
        unread = [r for r in batch_rows if r["batch_id"] not in found]
        self._metrics.kept_progress.labels("used").inc(len(found))
        self._metrics.kept_progress.labels("read").inc(len(unread))
        if unread:
            found |= await self._read(unread)
        for progress in found.values():  # kept progress is what a read would return
            if progress.active_run is not None:
                self._stored[progress.active_run.run_id] = progress.active_run
        return {r["batch_id"]: found[r["batch_id"]] for r in batch_rows}

    def settle(self, progress: BatchProgress) -> None:
        self._settled[progress.batch.batch_id] = progress

    def committed(self) -> None:
        """Keep what was settled of the batches this unit stamped (its transaction committed)."""
        for batch_id, progress in self._settled.items():
            stamp = self._stamps.get(batch_id)
            if stamp is not None:
                self._kept.keep(batch_id, stamp, _KeptProgress(progress))

    async def _read(self, batch_rows: Sequence[Any]) -> dict[str, BatchProgress]:
        """The progress of the locked batches of ``batch_rows``, read whole."""
        conn = self._conn
        ids = [r["batch_id"] for r in batch_rows]
        essays: dict[str, list[Any]] = {}
        for e in await conn.fetch(_SELECT_ESSAYS, ids):
            essays.setdefault(e["batch_id"], []).append(e)
        results: dict[str, dict[str, Any]] = {b: {} for b in ids}
        for r in await conn.fetch(_SELECT_RESULTS, ids):
            results[r["batch_id"]][r["step"]] = rows.step_result(r)
        active = {
            run.batch_id: run
            for run in await _runs(conn, await conn.fetch(_SELECT_ACTIVE_RUNS, ids))
        }
        return {
            r["batch_id"]: BatchProgress(
                rows.batch(r, essays.get(r["batch_id"], [])),
                results[r["batch_id"]],
                active.get(r["batch_id"]),
            )
            for r in batch_rows
        }

    async def run_for_request(self, batch_id: str, request_id: str) -> PipelineRun | None:
        return await _run_for_request(self._conn, batch_id, request_id)

    async def get_run(self, run_id: str) -> PipelineRun | None:
        found = await _runs(self._conn, await self._conn.fetch(_SELECT_RUN, run_id))
        return found[0] if found else None

    async def save(self, write: ProgressWrite) -> None:
        conn = self._conn
        if write.run is not None:
            if write.new_run:
                await self._insert_run(write.run)
            else:
                await self._update_run(
                    write.run, {t.step for t in write.transitions}, write.retry is not None
                )
            self._stored[write.run.run_id] = write.run
        if write.transitions:
            await conn.executemany(
                _INSERT_TRANSITION,
                [
                    (
                        t.run_id,
                        t.seq,
                        t.step,
                        t.step_status.value,
                        t.succeeded,
                        t.failed,
                        t.total,
                        t.run_status.value,
                        t.finished_at,
                        t.attempt,
                        t.step_attempt,
                        t.timed_out,
                        t.deadline,
                        t.cancel_reason,
                    )
                    for t in write.transitions
                ],
            )
        if write.retry is not None:
            retry = write.retry
            await conn.execute(
                _INSERT_RETRY,
                retry.run_id,
                retry.attempt,
                retry.request_id,
                list(retry.steps),
                json.dumps([list(pair) for pair in retry.retried]),
            )
        if write.result is not None:
            r = write.result
            await conn.execute(
                _UPSERT_RESULT,
                write.batch_id,
                r.step,
                r.satisfied,
                r.succeeded,
                r.failed,
                r.total,
                json.dumps(dict(r.succeeded_essays)),
            )
        if write.texts:
            await conn.execute(
                _UPDATE_TEXTS, write.batch_id, list(write.texts), list(write.texts.values())
            )
        events = [*await self._record_dispatches(write), *write.events]
        await outbox.enqueue(conn, events)
        if write.run is not None and write.transitions:
            await conn.execute(_NOTIFY, PROGRESS_CHANNEL, write.run.run_id)

    async def _record_dispatches(self, write: ProgressWrite) -> list[OutgoingEvent]:
        """The command events whose dispatch was not recorded before (and now is)."""
        if not write.commands:
            return []
        recorded = await self._conn.fetch(
            _RECORD_DISPATCHES,
            [d.run_id for d, _ in write.commands],
            [d.step for d, _ in write.commands],
            [d.attempt for d, _ in write.commands],
            [e.envelope.event_id for _, e in write.commands],
            [len(d.essays) for d, _ in write.commands],
        )
        new = {(r["run_id"], r["step"], r["attempt"]) for r in recorded}
        return [e for d, e in write.commands if (d.run_id, d.step, d.attempt) in new]

    async def _insert_run(self, run: PipelineRun) -> None:
        async with self._one_active(run):
            await self._conn.execute(
                _INSERT_RUN,
                run.run_id,
                run.batch_id,
                run.request_id,
                run.pipeline,
                run.status.value,
                run.definition_version,
                run.correlation_id,
                run.version,
                list(run.completed_steps),
                run.created_at,
                run.finished_at,
                run.attempt,
                run.cancel_reason,
            )
        await self._upsert_steps(run)

    async def _update_run(self, run: PipelineRun, changed: set[str], reactivated: bool) -> None:
        """Update the run; ``reactivated`` (a retry: a finished run active again) is the one
        update the one-active-run index can refuse."""
        values = (
            run.run_id,
            run.status.value,
            run.version,
            list(run.completed_steps),
            run.finished_at,
            run.attempt,
            run.cancel_reason,
        )
        if reactivated:
            async with self._one_active(run):
                await self._conn.execute(_UPDATE_RUN, *values)
        else:
            await self._conn.execute(_UPDATE_RUN, *values)
        await self._update_steps(run, changed)

    async def _update_steps(self, run: PipelineRun, names: set[str]) -> None:
        """Write the run's steps named in ``names``: without their essay lists where this unit
        knows PostgreSQL holds them as they are (it read or wrote the run), else whole."""
        stored = self._stored.get(run.run_id)
        before = {s.name: s for s in stored.steps} if stored is not None else {}
        kept_lists: list[RunStep] = []
        whole: set[str] = set()
        for step in run.steps:
            if step.name not in names:
                continue
            old = before.get(step.name)
            if old is not None and (old.essays, old.retry_essays) == (
                step.essays,
                step.retry_essays,
            ):
                kept_lists.append(step)
            else:
                whole.add(step.name)
        if kept_lists:
            updated = await self._conn.execute(
                _UPDATE_STEPS,
                run.run_id,
                [s.name for s in kept_lists],
                [s.status.value for s in kept_lists],
                [s.succeeded for s in kept_lists],
                [s.failed for s in kept_lists],
                [s.total for s in kept_lists],
                [s.attempt for s in kept_lists],
                [s.deadline for s in kept_lists],
                [s.timed_out for s in kept_lists],
            )
            if int(updated.split()[-1]) != len(kept_lists):  # a row is not there: write whole
                log.warning("run %s: step rows missing; writing the steps whole", run.run_id)
                whole.update(s.name for s in kept_lists)
        if whole:
            await self._upsert_steps(run, whole)

    @asynccontextmanager
    async def _one_active(self, run: PipelineRun) -> AsyncIterator[None]:
        """A savepoint around a write that may make a second run of the batch active: the
        unique index's refusal becomes ``RunConflict`` naming the run that holds it (for a
        reused request id, the run of that request)."""
        conn = self._conn
        try:
            async with conn.transaction():
                yield
        except asyncpg.UniqueViolationError as exc:
            active = await conn.fetch(_SELECT_ACTIVE_RUNS, [run.batch_id])
            holder = active[0]["run_id"] if active else "?"
            if exc.constraint_name != ACTIVE_RUN_INDEX:
                found = await _run_for_request(conn, run.batch_id, run.request_id)
                holder = found.run_id if found is not None else holder
            raise RunConflict(run.batch_id, holder) from exc

    async def _upsert_steps(self, run: PipelineRun, only: set[str] | None = None) -> None:
        """Write the run's steps (``only`` those named: the ones a change touched)."""
        await self._conn.executemany(
            _UPSERT_STEP,
            [
                (
                    run.run_id,
                    position,
                    s.name,
                    s.command,
                    list(s.depends_on),
                    s.status.value,
                    s.succeeded,
                    s.failed,
                    s.total,
                    list(s.essays),
                    s.attempt,
                    s.timeout,
                    s.deadline,
                    s.timed_out,
                    list(s.retry_essays),
                )
                for position, s in enumerate(run.steps)
                if only is None or s.name in only
            ],
        )


def _metadata_columns(metadata: BatchMetadata) -> tuple[str, str, str, str]:
    """The columns UpdateBatch sets, from ``metadata``: name, course_code, flags, labels."""
    return (
        metadata.name,
        metadata.course_code,
        json.dumps(dict(metadata.flags)),
        json.dumps(dict(metadata.labels)),
    )


def _snapshot(conn: Any) -> Any:
    """A read-only transaction seeing one snapshot (a run row and its steps agree)."""
    return conn.transaction(isolation="repeatable_read", readonly=True)


async def _batch(conn: Any, batch_id: str) -> Batch:
    row = await conn.fetchrow(_SELECT_BATCH, batch_id)
    if row is None:
        raise BatchNotFound(batch_id)
    return rows.batch(row, await conn.fetch(_SELECT_ESSAYS, [batch_id]))


async def _runs(conn: Any, run_rows: Sequence[Any]) -> list[PipelineRun]:
    if not run_rows:
        return []
    steps = await conn.fetch(_SELECT_STEPS, [r["run_id"] for r in run_rows])
    return rows.runs(run_rows, steps)


async def _run_for_request(conn: Any, batch_id: str, request_id: str) -> PipelineRun | None:
    found = await _runs(conn, await conn.fetch(_SELECT_RUN_FOR_REQUEST, batch_id, request_id))
    return found[0] if found else None
