"""The real mode's batch store: PostgreSQL, every change and its events in one transaction.

Events go into ``event_outbox`` (``mesh.postgres.outbox.enqueue``) in the same transaction as
the state change that causes them; the relay publishes them with their ids. Concurrency control:

- a unit of progress (``progress()``) locks the batch rows it loads (``FOR UPDATE``, in id order,
  so two units never deadlock), which serialises StartPipeline and completion handling per batch;
- the partial unique index ``pipeline_runs_one_active`` makes a second active run of a batch
  impossible whatever the code above does: a violation becomes ``RunConflict``;
- ``run_dispatches`` has the primary key (run_id, step): a command whose dispatch is already
  recorded is never enqueued again; outbox event ids are deterministic as a second guard;
- CreateBatch inserts under the unique ``request_id``; a concurrent twin waits for the first and
  returns its batch.

Each committed change of a run also sends ``NOTIFY batch_run_progress, '<run_id>'`` so watchers on
every replica wake at once (they poll as well).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from batch_server.domain.errors import BatchNotFound, RunConflict
from batch_server.domain.essays import SpellcheckEssay, StoredEssay
from batch_server.domain.model import Batch, BatchSummary, PipelineRun, Transition
from batch_server.domain.paging import PageCursor
from batch_server.domain.run import BatchProgress
from batch_server.ports import NewBatch, ProgressWrite, StoredRequest
from batch_server.store import rows
from batch_server.store.errors import translated
from mesh.events.bus import OutgoingEvent
from mesh.postgres import outbox

MIGRATIONS = {"mesh": "mesh.postgres.sql", "batch": "batch_server.store.sql"}
PROGRESS_CHANNEL = "batch_run_progress"
ACTIVE_RUN_INDEX = "pipeline_runs_one_active"

_INSERT_BATCH = """
INSERT INTO batches (batch_id, request_id, fingerprint, name, course_code, language, flags,
                     labels, essay_count, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10)
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
_LOCK_BATCHES = (
    f"SELECT {_BATCH_COLUMNS} FROM batches WHERE batch_id = ANY($1::text[]) "
    "ORDER BY batch_id FOR UPDATE"
)
_SELECT_ESSAYS = """
SELECT batch_id, essay_id, client_ref, original_storage_id, current_storage_id
  FROM batch_essays WHERE batch_id = ANY($1::text[]) ORDER BY batch_id, position
"""
_SELECT_REQUEST = "SELECT batch_id, fingerprint FROM batches WHERE request_id = $1"
_LIST_BATCHES = """
SELECT b.batch_id, b.name, b.essay_count, b.created_at,
       (SELECT r.status FROM pipeline_runs r WHERE r.batch_id = b.batch_id
         ORDER BY r.created_at DESC, r.run_id DESC LIMIT 1) AS latest_status
  FROM batches b
 WHERE $2::timestamptz IS NULL OR (b.created_at, b.batch_id) < ($2::timestamptz, $3::text)
 ORDER BY b.created_at DESC, b.batch_id DESC
 LIMIT $1
"""
_SELECT_RESULTS = """
SELECT batch_id, step, satisfied, succeeded, failed, total, succeeded_essays
  FROM batch_step_results WHERE batch_id = ANY($1::text[])
"""
_RUN_COLUMNS = (
    "run_id, batch_id, request_id, pipeline, status, definition_version, correlation_id, "
    "version, completed_steps, created_at, finished_at"
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
SELECT run_id, step, command, depends_on, status, succeeded, failed, total, essay_ids
  FROM run_steps WHERE run_id = ANY($1::text[]) ORDER BY run_id, position
"""
_INSERT_RUN = """
INSERT INTO pipeline_runs (run_id, batch_id, request_id, pipeline, status, definition_version,
                           correlation_id, version, completed_steps, created_at, finished_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""
_UPDATE_RUN = """
UPDATE pipeline_runs SET status = $2, version = $3, completed_steps = $4, finished_at = $5
 WHERE run_id = $1
"""
_UPSERT_STEP = """
INSERT INTO run_steps (run_id, position, step, command, depends_on, status, succeeded, failed,
                       total, essay_ids)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (run_id, step) DO UPDATE
   SET status = EXCLUDED.status, succeeded = EXCLUDED.succeeded, failed = EXCLUDED.failed,
       total = EXCLUDED.total, essay_ids = EXCLUDED.essay_ids
"""
_INSERT_TRANSITION = """
INSERT INTO run_transitions (run_id, seq, step, step_status, succeeded, failed, total,
                             run_status, finished_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""
_SELECT_TRANSITIONS = """
SELECT run_id, seq, step, step_status, succeeded, failed, total, run_status, finished_at
  FROM run_transitions WHERE run_id = $1 AND seq > $2 ORDER BY seq
"""
_RECORD_DISPATCHES = """
INSERT INTO run_dispatches (run_id, step, event_id, essay_count)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[])
ON CONFLICT DO NOTHING
RETURNING run_id, step
"""
_UPSERT_RESULT = """
INSERT INTO batch_step_results (batch_id, step, satisfied, succeeded, failed, total,
                                succeeded_essays)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
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
    """A ``BatchStore`` over an asyncpg pool (owned by the caller)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

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

    async def list_batches(self, limit: int, after: PageCursor | None) -> list[BatchSummary]:
        async with translated():
            found = await self._pool.fetch(
                _LIST_BATCHES,
                limit,
                after.created_at if after else None,
                after.batch_id if after else None,
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

    @asynccontextmanager
    async def progress(self) -> AsyncIterator[_PostgresUnit]:
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            yield _PostgresUnit(conn)


class _PostgresUnit:
    """A ``ProgressUnit``: one transaction; loaded batches stay locked until it ends."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def load(self, batch_ids: Sequence[str]) -> dict[str, BatchProgress]:
        conn = self._conn
        ids = sorted(set(batch_ids))
        batch_rows = await conn.fetch(_LOCK_BATCHES, ids)
        if not batch_rows:
            return {}
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

    async def save(self, write: ProgressWrite) -> None:
        conn = self._conn
        if write.run is not None:
            if write.new_run:
                await self._insert_run(write.run)
            else:
                await self._update_run(write.run, {t.step for t in write.transitions})
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
                    )
                    for t in write.transitions
                ],
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
            [e.envelope.event_id for _, e in write.commands],
            [len(d.essays) for d, _ in write.commands],
        )
        new = {(r["run_id"], r["step"]) for r in recorded}
        return [e for d, e in write.commands if (d.run_id, d.step) in new]

    async def _insert_run(self, run: PipelineRun) -> None:
        conn = self._conn
        try:
            async with conn.transaction():  # a savepoint: the conflict is reported below
                await conn.execute(
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
                )
        except asyncpg.UniqueViolationError as exc:
            active = await conn.fetch(_SELECT_ACTIVE_RUNS, [run.batch_id])
            holder = active[0]["run_id"] if active else "?"
            if exc.constraint_name != ACTIVE_RUN_INDEX:
                found = await _run_for_request(conn, run.batch_id, run.request_id)
                holder = found.run_id if found is not None else holder
            raise RunConflict(run.batch_id, holder) from exc
        await self._upsert_steps(run)

    async def _update_run(self, run: PipelineRun, changed: set[str]) -> None:
        await self._conn.execute(
            _UPDATE_RUN,
            run.run_id,
            run.status.value,
            run.version,
            list(run.completed_steps),
            run.finished_at,
        )
        await self._upsert_steps(run, changed)

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
                )
                for position, s in enumerate(run.steps)
                if only is None or s.name in only
            ],
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
