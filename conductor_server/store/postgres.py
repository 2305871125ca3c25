"""The PostgreSQL state store: the durable authority, with the transactional outbox.

Schema: ``sql/0001_pipeline_state.sql`` and after. One ``record_outcomes`` call is one
transaction:

1. lock the batches' rows (``FOR NO KEY UPDATE``, in id order), stamping each anew, and read
   their step counts, unless the store kept the batch's tally from its own last write and the
   stamp it read is the one it wrote then (``sql/0003_tally_stamps.sql``, ``mesh.postgres.kept``);
2. read, for every essay the records name that the tally has not read, whether it is in its
   batch, its position, and every step's outcome it already has;
3. count the records with the rule (``conductor_server.domain.counting``) on the tally;
4. write the new outcomes (binary COPY; an update of the row of an essay a retry reopened), the
   counts that moved, and a ``BatchStepCompleted`` outbox row (``conductor_server.events``) for
   each step that completed, listing its succeeded essays in batch order; once committed, keep
   the tally with its stamp.

``reopen`` and ``expire`` are rare and need every essay of the batch: they read the whole batch
under the same lock, then write the same way, and keep nothing. A crash anywhere before the
commit writes nothing; a redelivered record is a DUPLICATE.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from conductor_server import events
from conductor_server.domain.counting import BatchTally, Mark, StepCount, StepTable, replay
from conductor_server.domain.model import (
    BatchRegistration,
    EssayStepResult,
    Outcome,
    OutcomeRecord,
    StepDefinition,
)
from conductor_server.metrics import ConductorMetrics
from conductor_server.ports import BatchState, Expired, RecordResult, Reopened
from conductor_server.store import results
from conductor_server.store.errors import (
    RegistrationConflict,
    StateBackendUnavailable,
    UnknownBatch,
    check_registration,
)
from conductor_server.store.results import timed_out
from mesh.postgres import outbox
from mesh.postgres.kept import KEPT_ESSAYS, Kept
from mesh.postgres.pool import TRANSIENT_ERRORS
from mesh.resource import AsyncResource

MIGRATIONS = {"mesh": "mesh.postgres.sql", "conductor": "conductor_server.store.sql"}
_OUTCOME_LETTER = {"s": Outcome.SUCCEEDED, "f": Outcome.FAILED, "t": Outcome.TIMED_OUT}
_OPEN = "o"  # the letter of a reopened essay's row, which has no outcome yet
_SEPARATOR = "\x1f"  # between a step and its mark: names and ids never contain it

# Locks the batches in id order and stamps each anew (``seen``: its stamp before); the
# transaction is marked as stamping its own writes (the triggers of sql/0003 leave them be).
_STAMPED = "set_config('conductor.stamped', 'on', true)"
_LOCK = f"""
WITH locked AS (
    SELECT batch_id, tally_stamp FROM conductor_batches
     WHERE batch_id = ANY($1::text[]) ORDER BY batch_id FOR NO KEY UPDATE
)
UPDATE conductor_batches b SET tally_stamp = nextval('conductor_tally_stamps')
  FROM locked, {_STAMPED} AS stamped
 WHERE b.batch_id = locked.batch_id
RETURNING b.batch_id, b.essay_count, b.flags, b.version, locked.tally_stamp AS seen,
          b.tally_stamp AS stamp
"""
_COUNTS = """
SELECT batch_id, step, succeeded, failed, total, eligible, timed_out, epoch
  FROM processing_pipeline_state WHERE batch_id = ANY($1::text[])
"""
# The named essays of one batch that are in it, with every outcome each already has, as the
# outcome's first letter ('o' for an essay open at a new attempt) followed by the step, then,
# for an attempt after the first, the attempt and the run. OFFSET 0 keeps the lateral subquery
# from being
# flattened into a join, so both lookups stay primary-key probes per named essay whatever the
# table statistics say (on young tables the planner otherwise scans every essay of the batch).
_ESSAYS = """
SELECT t.essay_id, m.position, m.done
  FROM unnest($2::text[]) AS t(essay_id)
 CROSS JOIN LATERAL (
       SELECT e.position,
              ARRAY(SELECT coalesce(left(o.outcome, 1), 'o') || o.step
                           || CASE WHEN o.attempt > 1
                                   THEN chr(31) || o.attempt || chr(31) || o.run_id ELSE '' END
                      FROM essay_step_outcomes o
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
    "run_id",
    "attempt",
    "error_code",
    "error_message",
)
# An outcome of an essay a retry reopened: its row exists (with no outcome) already.
_UPDATE_OUTCOMES = """
UPDATE essay_step_outcomes o
   SET outcome = t.outcome, output_storage_id = t.output_storage_id, event_id = t.event_id,
       run_id = t.run_id, attempt = t.attempt, error_code = t.error_code,
       error_message = t.error_message, recorded_at = now()
  FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
              $8::int[], $9::text[], $10::text[])
       AS t(essay_id, step, outcome, output_storage_id, event_id, run_id, attempt, error_code,
            error_message)
 WHERE o.batch_id = $1 AND o.essay_id = t.essay_id AND o.step = t.step
"""
_REOPEN = """
INSERT INTO essay_step_outcomes AS o (batch_id, essay_id, step, position, outcome, run_id,
                                      attempt, recorded_at)
SELECT $1, t.essay_id, t.step, t.position, NULL, $4, $5, NULL
  FROM unnest($2::text[], $3::text[], $6::int[]) AS t(essay_id, step, position)
ON CONFLICT (batch_id, essay_id, step) DO UPDATE
   SET outcome = NULL, output_storage_id = '', event_id = '', run_id = excluded.run_id,
       attempt = excluded.attempt, error_code = '', error_message = '', recorded_at = NULL
"""
_WHOLE_BATCH = """
SELECT e.essay_id, e.position, o.step, o.outcome, o.run_id, o.attempt
  FROM conductor_batch_essays e
  LEFT JOIN essay_step_outcomes o ON o.batch_id = e.batch_id AND o.essay_id = e.essay_id
 WHERE e.batch_id = $1
 ORDER BY e.position
"""
_RESULTS = """
SELECT essay_id, step, outcome, output_storage_id, error_code, error_message, run_id, attempt,
       recorded_at
  FROM essay_step_outcomes WHERE batch_id = $1 AND essay_id = ANY($2::text[])
"""
_UPDATE_COUNTS = """
UPDATE processing_pipeline_state s
   SET succeeded = t.succeeded, failed = t.failed, total = t.total, eligible = t.eligible,
       status = t.status, timed_out = t.timed_out, epoch = t.epoch, updated_at = now(),
       completed_at = CASE WHEN t.succeeded + t.failed = t.total
                           THEN coalesce(s.completed_at, now()) END
  FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::int[], $6::int[], $7::text[],
              $8::int[], $9::int[])
       AS t(batch_id, step, succeeded, failed, total, eligible, status, timed_out, epoch)
 WHERE s.batch_id = t.batch_id AND s.step = t.step
"""
_SUCCEEDED = """
SELECT essay_id, output_storage_id FROM essay_step_outcomes
 WHERE batch_id = $1 AND step = $2 AND outcome = 'succeeded' ORDER BY position
"""
_INSERT_BATCH = f"""
INSERT INTO conductor_batches (batch_id, essay_count, essays_digest, flags, tally_stamp)
SELECT $1::text, $2::int, $3::text, $4::text[], nextval('conductor_tally_stamps')
  FROM {_STAMPED} AS stamped
ON CONFLICT (batch_id) DO NOTHING RETURNING version, tally_stamp
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
SELECT b.essay_count, b.flags, b.version, s.step, s.succeeded, s.failed, s.total, s.eligible,
       s.timed_out, s.epoch
  FROM conductor_batches b LEFT JOIN processing_pipeline_state s USING (batch_id)
 WHERE b.batch_id = $1
"""
_REMEMBER_STALE = """
INSERT INTO conductor_mirror_backlog (batch_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING
"""
_STALE = "SELECT batch_id FROM conductor_mirror_backlog ORDER BY since LIMIT $1"
_FORGET_STALE = "DELETE FROM conductor_mirror_backlog WHERE batch_id = ANY($1::text[])"
_EXISTS = "SELECT 1 FROM conductor_batches WHERE batch_id = $1"
_BATCH_ESSAYS = "SELECT essay_id FROM conductor_batch_essays WHERE batch_id = $1 ORDER BY position"
_BATCH_OUTCOMES = """
SELECT essay_id, step, outcome FROM essay_step_outcomes
 WHERE batch_id = $1 AND outcome IS NOT NULL
"""


_BATCH_ID = operator.itemgetter("batch_id")


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


def _count_of(row: Any) -> StepCount:
    return StepCount(
        row["succeeded"],
        row["failed"],
        row["total"],
        row["eligible"],
        row["timed_out"],
        row["epoch"],
    )


def _read_done(
    done: Sequence[str],
) -> tuple[dict[str, Outcome], dict[str, Mark], list[str]]:
    """An essay's outcomes, marks and open steps from its ``_ESSAYS`` ``done`` array."""
    outcomes: dict[str, Outcome] = {}
    marks: dict[str, Mark] = {}
    opened: list[str] = []
    for item in done:
        letter, step = item[0], item[1:]
        if _SEPARATOR in step:
            step, attempt, run_id = step.split(_SEPARATOR, 2)
            marks[step] = (run_id, int(attempt))
        if letter == _OPEN:
            opened.append(step)
        else:
            outcomes[step] = _OUTCOME_LETTER[letter]
    return outcomes, marks, opened


@dataclass(slots=True)
class _Locked:
    """A batch locked for one call, its tally of what was read of it, and the (essay, step)
    rows of essays open at a new attempt (an outcome for one updates its row). ``stamp``: the
    batch's tally stamp in this call's transaction (kept with the tally once it commits)."""

    batch_id: str
    essay_count: int
    flags: frozenset[str]
    version: int
    tally: BatchTally
    positions: dict[str, int]
    open_rows: set[tuple[str, str]]
    members: set[str]
    stamp: int = 0

    @property
    def whole(self) -> bool:
        """Whether every essay of the batch has been read."""
        return len(self.positions) == self.essay_count

    def committed(self, recorded: Iterable[OutcomeRecord]) -> None:
        """The call's writes are committed: ``recorded``, its new outcomes, filled their rows."""
        for record in recorded:
            self.open_rows.discard((record.essay_id, record.step))
        self.tally.changed.clear()
        self.tally.reopened.clear()

    def add(self, essay_id: str, position: int, done: Sequence[str]) -> None:
        """Add an essay of the batch, with what its ``done`` array says it has."""
        outcomes, marks, opened = _read_done(done)
        self.positions[essay_id] = position
        self.members.add(essay_id)
        self.tally.outcomes[essay_id] = outcomes
        if marks:
            self.tally.marks[essay_id] = marks
        for step in opened:
            self.open_rows.add((essay_id, step))

    def state(self) -> BatchState:
        counts = self.tally.counts
        return BatchState(
            self.batch_id,
            self.essay_count,
            self.flags,
            self.tally.states(),
            self.version,
            {step: count.epoch for step, count in counts.items()},
        )


@dataclass(frozen=True, slots=True)
class Recorded:
    """The answer of ``record``: one result per record, and each touched batch's state after."""

    results: list[RecordResult]
    states: list[BatchState]


class PostgresStateStore(AsyncResource):
    """Counts outcomes in PostgreSQL over ``pool`` (owned by the caller).

    It keeps the tallies of the batches it wrote last (at most ``kept_essays`` essays' worth):
    a call whose batch still has the stamp this store committed counts on the kept tally and
    reads only the named essays it has not read yet."""

    def __init__(
        self,
        pool: Any,
        steps: Mapping[str, StepDefinition],
        kept_essays: int = KEPT_ESSAYS,
        metrics: ConductorMetrics | None = None,
    ) -> None:
        self._pool = pool
        self._table = StepTable(steps)
        self._kept: Kept[_Locked] = Kept(kept_essays)
        self._metrics = metrics or ConductorMetrics(CollectorRegistry())

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
                inserted = await conn.fetchrow(_INSERT_BATCH, batch_id, len(essays), digest, flags)
                created = inserted is not None
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
        if created:
            batch = self._new_batch(registration, inserted["version"], counts)
            self._kept.keep(batch_id, inserted["tally_stamp"], batch)
        return created, state

    def _new_batch(
        self, registration: BatchRegistration, version: int, counts: dict[str, StepCount]
    ) -> _Locked:
        """A newly registered batch as read whole: every essay, no outcome yet, the ``counts``
        its registration wrote."""
        essays = registration.essay_ids
        members = set(essays)
        return _Locked(
            registration.batch_id,
            len(essays),
            frozenset(registration.flags),
            version,
            BatchTally(self._table, counts, {essay: {} for essay in essays}, members),
            {essay: n for n, essay in enumerate(essays)},
            set(),
            members,
        )

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
            return Recorded(results.count(records, self._table, {}, {}), [])
        with _unavailable():
            async with self._pool.acquire() as conn:
                async with conn.transaction():
                    locked = await self._load(conn, known)
                    tallies = {batch_id: batch.tally for batch_id, batch in locked.items()}
                    flags = {batch_id: batch.flags for batch_id, batch in locked.items()}
                    answers = results.count(records, self._table, tallies, flags)
                    await self._save(conn, locked, answers)
                # Committed. The states are read before a tally is kept: a kept tally is the
                # next call's to change, from the first await on.
                states = [batch.state() for batch in locked.values()]
                recorded: dict[str, list[OutcomeRecord]] = {batch_id: [] for batch_id in locked}
                for answer in answers:
                    if answer.newly_recorded:
                        recorded[answer.record.batch_id].append(answer.record)
                for batch_id, batch in locked.items():
                    batch.committed(recorded[batch_id])
                    self._kept.keep(batch_id, batch.stamp, batch)
        return Recorded(answers, states)

    async def _load(self, conn: Any, records: Sequence[OutcomeRecord]) -> dict[str, _Locked]:
        """Lock the records' batches and read what counting the records needs."""
        named: dict[str, set[str]] = {}
        for record in records:
            named.setdefault(record.batch_id, set()).add(record.essay_id)
        return await self._lock(conn, named)

    async def _lock(
        self, conn: Any, named: Mapping[str, set[str]], reuse: bool = True
    ) -> dict[str, _Locked]:
        """Lock the batches of ``named`` (batch -> essays) and read their counts and the named
        essays, or (``reuse``) take the tally kept of a batch whose stamp has not moved since,
        reading only the named essays it has not read; batches that do not exist are left
        out. What was kept of a batch is taken either way: the call re-stamps it."""
        rows = sorted(await conn.fetch(_LOCK, sorted(named)), key=_BATCH_ID)
        if not rows:
            return {}
        kept = {row["batch_id"]: self._kept.take(row["batch_id"], row["seen"]) for row in rows}
        if not reuse:
            kept = dict.fromkeys(kept)
        ids = [batch_id for batch_id, batch in kept.items() if batch is None]
        if reuse:
            self._metrics.kept_tallies.labels("used").inc(len(kept) - len(ids))
            self._metrics.kept_tallies.labels("read").inc(len(ids))
        counts: dict[str, dict[str, StepCount]] = {batch_id: {} for batch_id in ids}
        if ids:
            for row in await conn.fetch(_COUNTS, ids):
                counts[row["batch_id"]][row["step"]] = _count_of(row)
        locked: dict[str, _Locked] = {}
        for row in rows:
            batch_id = row["batch_id"]
            batch = kept[batch_id]
            if batch is not None:
                batch.flags, batch.version = frozenset(row["flags"]), row["version"]
                batch.stamp = row["stamp"]
                locked[batch_id] = batch
                if not batch.whole:
                    await self._read_essays(conn, batch, named[batch_id])
                continue
            if any(step not in counts[batch_id] for step in self._table):
                counts[batch_id] = await self._add_steps(conn, batch_id, counts[batch_id])
            members: set[str] = set()
            batch = _Locked(
                batch_id,
                row["essay_count"],
                frozenset(row["flags"]),
                row["version"],
                BatchTally(self._table, counts[batch_id], {}, members),
                {},
                set(),
                members,
                row["stamp"],
            )
            await self._read_essays(conn, batch, named[batch_id])
            locked[batch_id] = batch
        return locked

    @staticmethod
    async def _read_essays(conn: Any, batch: _Locked, named: Iterable[str]) -> None:
        """Read the named essays ``batch`` has not read yet."""
        unread = [essay for essay in named if essay not in batch.positions]
        if unread:
            for essay in await conn.fetch(_ESSAYS, batch.batch_id, unread):
                batch.add(essay["essay_id"], essay["position"], essay["done"])

    async def _load_whole(self, conn: Any, batch_id: str) -> _Locked:
        """Lock one batch and read all of it: every essay, in batch order, with its outcomes."""
        locked = (await self._lock(conn, {batch_id: set()}, reuse=False)).get(batch_id)
        if locked is None:
            raise UnknownBatch(batch_id)
        done: dict[str, list[str]] = {}
        for row in await conn.fetch(_WHOLE_BATCH, batch_id):
            items = done.setdefault(row["essay_id"], [])
            locked.positions[row["essay_id"]] = row["position"]
            if row["step"] is None:
                continue
            letter = _OPEN if row["outcome"] is None else row["outcome"][0]
            mark = f"{_SEPARATOR}{row['attempt']}{_SEPARATOR}{row['run_id']}"
            items.append(f"{letter}{row['step']}{mark if row['attempt'] > 1 else ''}")
        for essay_id, items in done.items():
            locked.add(essay_id, locked.positions[essay_id], items)
        return locked

    # -- retries, timeouts ------------------------------------------------------------------

    async def reopen(
        self, batch_id: str, run_id: str, attempt: int, steps: Sequence[str]
    ) -> list[Reopened]:
        return (await self.reopen_with_state(batch_id, run_id, attempt, steps))[0]

    async def reopen_with_state(
        self, batch_id: str, run_id: str, attempt: int, steps: Sequence[str]
    ) -> tuple[list[Reopened], BatchState]:
        """``reopen``, also answering the batch's state after it."""
        results.known_steps(self._table, batch_id, steps)
        with _unavailable():
            async with self._pool.acquire() as conn, conn.transaction():
                batch = await self._load_whole(conn, batch_id)
                essays = list(batch.positions)  # batch order
                answers = []
                for step in steps:
                    opened = batch.tally.reopen(step, run_id, attempt, essays)
                    answers.append(Reopened(step, tuple(opened), batch.tally.state(step)))
                rows = sorted(batch.tally.reopened, key=lambda pair: batch.positions[pair[0]])
                if rows:
                    await conn.execute(
                        _REOPEN,
                        batch_id,
                        [essay for essay, _ in rows],
                        [step for _, step in rows],
                        run_id,
                        attempt,
                        [batch.positions[essay] for essay, _ in rows],
                    )
                    await self._update_counts(conn, {batch_id: batch})
        return answers, batch.state()

    async def expire(self, batch_id: str, step: str, run_id: str, attempt: int) -> Expired:
        return (await self.expire_with_state(batch_id, step, run_id, attempt))[0]

    async def expire_with_state(
        self, batch_id: str, step: str, run_id: str, attempt: int
    ) -> tuple[Expired, BatchState]:
        """``expire``, also answering the batch's state after it."""
        results.known_steps(self._table, batch_id, [step])
        with _unavailable():
            async with self._pool.acquire() as conn, conn.transaction():
                batch = await self._load_whole(conn, batch_id)
                missing = batch.tally.missing(step, run_id, attempt, list(batch.positions))
                records = [timed_out(batch_id, step, essay, run_id, attempt) for essay in missing]
                answers = results.count(records, self._table, {batch_id: batch.tally}, None)
                await self._save(conn, {batch_id: batch}, answers)
        return Expired(tuple(missing), batch.tally.state(step)), batch.state()

    async def essay_results(
        self, batch_id: str, essay_ids: Sequence[str]
    ) -> dict[str, list[EssayStepResult]]:
        with _unavailable():
            async with self._pool.acquire() as conn:
                if await conn.fetchval(_EXISTS, batch_id) is None:
                    raise UnknownBatch(batch_id)
                rows = await conn.fetch(_RESULTS, batch_id, list(essay_ids))
        found: dict[str, dict[str, EssayStepResult]] = {essay: {} for essay in essay_ids}
        for row in rows:
            found[row["essay_id"]][row["step"]] = EssayStepResult(
                row["step"],
                None if row["outcome"] is None else Outcome(row["outcome"]),
                row["output_storage_id"],
                row["error_code"],
                row["error_message"],
                row["run_id"],
                row["attempt"],
                row["recorded_at"],
            )
        order = {step: n for n, step in enumerate(self._table)}
        return {
            essay: sorted(by_step.values(), key=lambda r: order.get(r.step, len(order)))
            for essay, by_step in found.items()
        }

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
        new = [answer.record for answer in answers if answer.newly_recorded]
        if not new:
            return
        reopened = [r for r in new if (r.essay_id, r.step) in locked[r.batch_id].open_rows]
        if reopened:
            await self._update_outcomes(conn, reopened)
            new = [r for r in new if (r.essay_id, r.step) not in locked[r.batch_id].open_rows]
        rows = [
            (
                r.batch_id,
                r.essay_id,
                r.step,
                locked[r.batch_id].positions[r.essay_id],
                r.outcome.value,
                r.output_storage_id,
                r.event_id,
                r.run_id,
                r.attempt,
                r.error_code,
                r.error_message,
            )
            for r in new
        ]
        if rows:
            await conn.copy_records_to_table(
                "essay_step_outcomes", records=rows, columns=_OUTCOME_COLUMNS
            )
        await self._update_counts(conn, locked)
        announcements = []
        for answer in answers:
            if not answer.completed_step or answer.state is None:
                continue
            record = answer.record
            tally = locked[record.batch_id].tally
            for state in (answer.state, *answer.cascaded):
                essays = await conn.fetch(_SUCCEEDED, record.batch_id, state.step)
                announcements.append(
                    events.step_completed(
                        record.batch_id,
                        state,
                        [(e[0], e[1]) for e in essays],
                        record.trace,
                        produces_text=self._table[state.step].produces_text,
                        epoch=tally.counts[state.step].epoch,
                        run_id=record.run_id,
                        attempt=record.attempt,
                    )
                )
        await outbox.enqueue(conn, announcements)

    @staticmethod
    async def _update_outcomes(conn: Any, records: Sequence[OutcomeRecord]) -> None:
        """Outcomes of essays whose rows a reopen left open (one batch per statement)."""
        by_batch: dict[str, list[OutcomeRecord]] = {}
        for record in records:
            by_batch.setdefault(record.batch_id, []).append(record)
        for batch_id, rows in by_batch.items():
            await conn.execute(
                _UPDATE_OUTCOMES,
                batch_id,
                [r.essay_id for r in rows],
                [r.step for r in rows],
                [r.outcome.value for r in rows],
                [r.output_storage_id for r in rows],
                [r.event_id for r in rows],
                [r.run_id for r in rows],
                [r.attempt for r in rows],
                [r.error_code for r in rows],
                [r.error_message for r in rows],
            )

    async def _update_counts(self, conn: Any, locked: Mapping[str, _Locked]) -> None:
        """Every step of each batch whose counts moved: a status may follow from another step's
        counts (a dependant BLOCKED by an unsatisfied dependency)."""
        columns: list[list[Any]] = [[], [], [], [], [], [], [], [], []]
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
                        count.timed_out,
                        count.epoch,
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
        counts = {row["step"]: _count_of(row) for row in rows if row["step"] is not None}
        return BatchState(
            batch_id,
            first["essay_count"],
            frozenset(first["flags"]),
            self._table.derive(counts),
            first["version"],
            {step: count.epoch for step, count in counts.items()},
        )
