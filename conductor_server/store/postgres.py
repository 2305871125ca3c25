"""The PostgreSQL state store: the durable authority, with the transactional outbox.

Schema: ``sql/0001_pipeline_state.sql``. One ``record_outcomes`` call is one transaction:

1. lock the batches' rows (``FOR NO KEY UPDATE``, in id order) and read their step counts;
2. read, for every essay the records name, whether it is in its batch, its position, and every
   step's outcome it already has;
3. count the records with the rule (``conductor_server.domain.counting``) on a ``BatchTally`` of
   what was read;
4. write the new outcomes (binary COPY), the counts that moved, and a ``BatchStepCompleted``
   outbox row (``conductor_server.events``) for each step that completed, listing its succeeded
   essays in batch order.

A crash anywhere before the commit writes nothing; a redelivered record is a DUPLICATE.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from conductor_server import events
from conductor_server.domain.counting import BatchTally, StepCount, StepTable, replay
from conductor_server.domain.model import BatchRegistration, Outcome, OutcomeRecord, StepDefinition
from conductor_server.ports import BatchState, RecordResult
from conductor_server.store import results
from conductor_server.store.errors import (
    RegistrationConflict,
    StateBackendUnavailable,
    UnknownBatch,
    check_registration,
)
from mesh.postgres import outbox
from mesh.postgres.pool import TRANSIENT_ERRORS
from mesh.resource import AsyncResource

MIGRATIONS = {"mesh": "mesh.postgres.sql", "conductor": "conductor_server.store.sql"}
_OUTCOME_LETTER = {"s": Outcome.SUCCEEDED, "f": Outcome.FAILED}

_LOCK = """
SELECT batch_id, essay_count, flags, version FROM conductor_batches
 WHERE batch_id = ANY($1::text[]) ORDER BY batch_id FOR NO KEY UPDATE
"""
_COUNTS = """
SELECT batch_id, step, succeeded, failed, total, eligible FROM processing_pipeline_state
 WHERE batch_id = ANY($1::text[])
"""
# The named essays of one batch that are in it, with every outcome each already has, as the
# outcome's first letter followed by the step. OFFSET 0 keeps the lateral subquery from being
# flattened into a join, so both lookups stay primary-key probes per named essay whatever the
# table statistics say (on young tables the planner otherwise scans every essay of the batch).
_ESSAYS = """
SELECT t.essay_id, m.position, m.done
  FROM unnest($2::text[]) AS t(essay_id)
 CROSS JOIN LATERAL (
       SELECT e.position,
              ARRAY(SELECT left(o.outcome, 1) || o.step FROM essay_step_outcomes o
                     WHERE o.batch_id = e.batch_id AND o.essay_id = e.essay_id) AS done
         FROM conductor_batch_essays e
        WHERE e.batch_id = $1 AND e.essay_id = t.essay_id
       OFFSET 0) AS m
"""
_OUTCOME_COLUMNS = (
    "batch_id",
    "essay_id",
    "step",
    "position",
    "outcome",
    "output_storage_id",
    "event_id",
)
_UPDATE_COUNTS = """
UPDATE processing_pipeline_state s
   SET succeeded = t.succeeded, failed = t.failed, total = t.total, eligible = t.eligible,
       status = t.status, updated_at = now(),
       completed_at = CASE WHEN t.succeeded + t.failed = t.total
                           THEN coalesce(s.completed_at, now()) END
  FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::int[], $6::int[], $7::text[])
       AS t(batch_id, step, succeeded, failed, total, eligible, status)
 WHERE s.batch_id = t.batch_id AND s.step = t.step
"""
_SUCCEEDED = """
SELECT essay_id, output_storage_id FROM essay_step_outcomes
 WHERE batch_id = $1 AND step = $2 AND outcome = 'succeeded' ORDER BY position
"""
_INSERT_BATCH = """
INSERT INTO conductor_batches (batch_id, essay_count, essays_digest, flags)
VALUES ($1, $2, $3, $4) ON CONFLICT (batch_id) DO NOTHING RETURNING version
"""
_KNOWN_BATCH = """
SELECT essays_digest, flags, version FROM conductor_batches WHERE batch_id = $1 FOR NO KEY UPDATE
"""
_UPDATE_FLAGS = """
UPDATE conductor_batches SET flags = $2, version = version + 1, updated_at = now()
 WHERE batch_id = $1
"""
_INSERT_STATES = """
INSERT INTO processing_pipeline_state (batch_id, step, succeeded, failed, total, eligible, status)
SELECT $1, * FROM unnest($2::text[], $3::int[], $4::int[], $5::int[], $6::int[], $7::text[])
ON CONFLICT DO NOTHING
"""
_STATE = """
SELECT b.essay_count, b.flags, b.version, s.step, s.succeeded, s.failed, s.total, s.eligible
  FROM conductor_batches b LEFT JOIN processing_pipeline_state s USING (batch_id)
 WHERE b.batch_id = $1
"""
_REMEMBER_STALE = """
INSERT INTO conductor_mirror_backlog (batch_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING
"""
_STALE = "SELECT batch_id FROM conductor_mirror_backlog ORDER BY since LIMIT $1"
_FORGET_STALE = "DELETE FROM conductor_mirror_backlog WHERE batch_id = ANY($1::text[])"
_BATCH_ESSAYS = "SELECT essay_id FROM conductor_batch_essays WHERE batch_id = $1 ORDER BY position"
_BATCH_OUTCOMES = "SELECT essay_id, step, outcome FROM essay_step_outcomes WHERE batch_id = $1"


def essays_digest(essay_ids: Sequence[str]) -> str:
    """A digest of the essay set (order does not matter): re-registration compares these."""
    return hashlib.sha256("\x00".join(sorted(essay_ids)).encode()).hexdigest()


@contextmanager
def _unavailable() -> Iterator[None]:
    """Translate PostgreSQL client failures into ``StateBackendUnavailable``."""
    try:
        yield
    except TRANSIENT_ERRORS as exc:
        raise StateBackendUnavailable("postgresql", f"{type(exc).__name__}: {exc}") from exc


@dataclass(slots=True)
class _Locked:
    """A batch locked for one call, and its tally of what the call read."""

    batch_id: str
    essay_count: int
    flags: frozenset[str]
    version: int
    tally: BatchTally
    positions: dict[str, int]

    def state(self) -> BatchState:
        return BatchState(
            self.batch_id, self.essay_count, self.flags, self.tally.states(), self.version
        )


@dataclass(frozen=True, slots=True)
class Recorded:
    """The answer of ``record``: one result per record, and each touched batch's state after."""

    results: list[RecordResult]
    states: list[BatchState]


class PostgresStateStore(AsyncResource):
    """Counts outcomes in PostgreSQL over ``pool`` (owned by the caller)."""

    def __init__(self, pool: Any, steps: Mapping[str, StepDefinition]) -> None:
        self._pool = pool
        self._table = StepTable(steps)

    async def close(self) -> None:
        """The pool belongs to the caller: nothing to release."""

    # -- registration -----------------------------------------------------------------------

    async def register_batch(self, registration: BatchRegistration) -> bool:
        return (await self.register(registration))[0]

    async def register(self, registration: BatchRegistration) -> tuple[bool, BatchState]:
        """``register_batch``, also answering the batch's state after it."""
        check_registration(registration)
        batch_id, essays = registration.batch_id, registration.essay_ids
        digest, flags = essays_digest(essays), sorted(registration.flags)
        with _unavailable():
            async with self._pool.acquire() as conn, conn.transaction():
                version = await conn.fetchval(_INSERT_BATCH, batch_id, len(essays), digest, flags)
                created = version is not None
                if created:
                    await conn.copy_records_to_table(
                        "conductor_batch_essays",
                        records=[(batch_id, essay, n) for n, essay in enumerate(essays)],
                        columns=("batch_id", "essay_id", "position"),
                    )
                    counts = self._table.initial_counts(len(essays))
                    await self._insert_states(conn, batch_id, counts)
                else:
                    await self._reregister(conn, batch_id, digest, flags)
                state = await self._read_state(conn, batch_id)
        return created, state

    async def _reregister(self, conn: Any, batch_id: str, digest: str, flags: list[str]) -> None:
        known = await conn.fetchrow(_KNOWN_BATCH, batch_id)
        if known["essays_digest"] != digest:
            raise RegistrationConflict(batch_id)
        if list(known["flags"]) != flags:
            await conn.execute(_UPDATE_FLAGS, batch_id, flags)

    async def _insert_states(
        self, conn: Any, batch_id: str, counts: Mapping[str, StepCount]
    ) -> None:
        states = {s.step: s for s in self._table.derive(counts)}
        names = list(counts)
        await conn.execute(
            _INSERT_STATES,
            batch_id,
            names,
            [counts[n].succeeded for n in names],
            [counts[n].failed for n in names],
            [counts[n].total for n in names],
            [counts[n].eligible for n in names],
            [states[n].status.value for n in names],
        )

    # -- recording --------------------------------------------------------------------------

    async def record_outcomes(self, records: Sequence[OutcomeRecord]) -> list[RecordResult]:
        return (await self.record(records)).results

    async def record(self, records: Sequence[OutcomeRecord]) -> Recorded:
        """``record_outcomes``, also answering the state after it of every batch it touched."""
        known = [r for r in records if r.step in self._table]
        if not known:
            return Recorded(results.count(records, self._table, {}), [])
        with _unavailable():
            async with self._pool.acquire() as conn, conn.transaction():
                locked = await self._load(conn, known)
                tallies = {batch_id: batch.tally for batch_id, batch in locked.items()}
                answers = results.count(records, self._table, tallies)
                await self._save(conn, locked, answers)
        return Recorded(answers, [batch.state() for batch in locked.values()])

    async def _load(self, conn: Any, records: Sequence[OutcomeRecord]) -> dict[str, _Locked]:
        """Lock the records' batches and read what counting the records needs."""
        rows = await conn.fetch(_LOCK, sorted({r.batch_id for r in records}))
        if not rows:
            return {}
        ids = [row["batch_id"] for row in rows]
        counts: dict[str, dict[str, StepCount]] = {batch_id: {} for batch_id in ids}
        for row in await conn.fetch(_COUNTS, ids):
            counts[row["batch_id"]][row["step"]] = StepCount(
                row["succeeded"], row["failed"], row["total"], row["eligible"]
            )
        named: dict[str, set[str]] = {batch_id: set() for batch_id in ids}
        for record in records:
            if record.batch_id in named:
                named[record.batch_id].add(record.essay_id)
        outcomes: dict[str, dict[str, dict[str, Outcome]]] = {batch_id: {} for batch_id in ids}
        positions: dict[str, dict[str, int]] = {batch_id: {} for batch_id in ids}
        for batch_id, essays in named.items():
            for row in await conn.fetch(_ESSAYS, batch_id, list(essays)):
                essay_id = row["essay_id"]
                positions[batch_id][essay_id] = row["position"]
                outcomes[batch_id][essay_id] = {d[1:]: _OUTCOME_LETTER[d[0]] for d in row["done"]}
        locked: dict[str, _Locked] = {}
        for row in rows:
            batch_id = row["batch_id"]
            if any(step not in counts[batch_id] for step in self._table):
                counts[batch_id] = await self._add_steps(conn, batch_id, counts[batch_id])
            tally = BatchTally(
                self._table, counts[batch_id], outcomes[batch_id], positions[batch_id].keys()
            )
            locked[batch_id] = _Locked(
                batch_id,
                row["essay_count"],
                frozenset(row["flags"]),
                row["version"],
                tally,
                positions[batch_id],
            )
        return locked

    async def _add_steps(
        self, conn: Any, batch_id: str, counts: dict[str, StepCount]
    ) -> dict[str, StepCount]:
        """Counts for the steps of the table the batch has no row for (the table gained them
        after it registered), from a replay of its outcomes; the rows are written."""
        essays = [row["essay_id"] for row in await conn.fetch(_BATCH_ESSAYS, batch_id)]
        outcomes: dict[str, dict[str, Outcome]] = {}
        for row in await conn.fetch(_BATCH_OUTCOMES, batch_id):
            if row["step"] in self._table:
                outcomes.setdefault(row["essay_id"], {})[row["step"]] = Outcome(row["outcome"])
        replayed = replay(self._table, essays, outcomes).counts
        missing = {step: replayed[step] for step in self._table if step not in counts}
        await self._insert_states(conn, batch_id, missing)
        return {**counts, **missing}

    async def _save(
        self, conn: Any, locked: Mapping[str, _Locked], answers: Sequence[RecordResult]
    ) -> None:
        """Write the counted outcomes, the counts that moved, and the completion events."""
        rows = [
            (
                r.batch_id,
                r.essay_id,
                r.step,
                locked[r.batch_id].positions[r.essay_id],
                r.outcome.value,
                r.output_storage_id,
                r.event_id,
            )
            for r in (answer.record for answer in answers if answer.newly_recorded)
        ]
        if not rows:
            return
        await conn.copy_records_to_table(
            "essay_step_outcomes", records=rows, columns=_OUTCOME_COLUMNS
        )
        await self._update_counts(conn, locked)
        announcements = []
        for answer in answers:
            if not answer.completed_step or answer.state is None:
                continue
            batch_id = answer.record.batch_id
            for state in (answer.state, *answer.cascaded):
                essays = await conn.fetch(_SUCCEEDED, batch_id, state.step)
                produces_text = self._table[state.step].produces_text
                succeeded = [(e[0], e[1]) for e in essays]
                announcements.append(
                    events.step_completed(batch_id, state, succeeded, produces_text=produces_text)
                )
        await outbox.enqueue(conn, announcements)

    async def _update_counts(self, conn: Any, locked: Mapping[str, _Locked]) -> None:
        """Every step of each batch whose counts moved: a status may follow from another step's
        counts (a dependant BLOCKED by an unsatisfied dependency)."""
        columns: list[list[Any]] = [[], [], [], [], [], [], []]
        for batch in locked.values():
            if not batch.tally.changed:
                continue
            counts = batch.tally.counts
            states = {s.step: s for s in batch.tally.states()}
            for step in self._table:
                count = counts[step]
                for column, value in zip(
                    columns,
                    (
                        batch.batch_id,
                        step,
                        count.succeeded,
                        count.failed,
                        count.total,
                        count.eligible,
                        states[step].status.value,
                    ),
                    strict=True,
                ):
                    column.append(value)
        await conn.execute(_UPDATE_COUNTS, *columns)

    # -- the mirror's backlog ---------------------------------------------------------------

    async def remember_stale(self, batch_ids: Sequence[str]) -> None:
        """Note batches whose counts the mirror missed (their merge failed)."""
        with _unavailable():
            await self._pool.execute(_REMEMBER_STALE, list(batch_ids))

    async def stale(self, limit: int) -> list[str]:
        """Up to ``limit`` batches the mirror missed, oldest first."""
        with _unavailable():
            return [row["batch_id"] for row in await self._pool.fetch(_STALE, limit)]

    async def forget_stale(self, batch_ids: Sequence[str]) -> None:
        with _unavailable():
            await self._pool.execute(_FORGET_STALE, list(batch_ids))

    # -- reading ----------------------------------------------------------------------------

    async def batch_state(self, batch_id: str) -> BatchState:
        with _unavailable():
            return await self._read_state(self._pool, batch_id)

    async def _read_state(self, conn_or_pool: Any, batch_id: str) -> BatchState:
        rows = await conn_or_pool.fetch(_STATE, batch_id)
        if not rows:
            raise UnknownBatch(batch_id)
        first = rows[0]
        counts = {
            row["step"]: StepCount(row["succeeded"], row["failed"], row["total"], row["eligible"])
            for row in rows
            if row["step"] is not None
        }
        return BatchState(
            batch_id,
            first["essay_count"],
            frozenset(first["flags"]),
            self._table.derive(counts),
            first["version"],
        )
