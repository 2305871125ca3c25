"""The PostgreSQL state store: the durable authority, with the transactional outbox.

Schema and server-side functions: ``conductor_server/sql/0001_pipeline_state.sql`` (numbered
migrations, applied with ``MIGRATION_SOURCES``). A batch of outcomes is one call of
``conductor_record_outcomes``: one round trip and one transaction that locks the batch, inserts
each new outcome once, adds the counts, fixes dependants' expected essays and writes one
``BatchStepCompleted`` outbox row per step that completed. The event id is deterministic
(``completion_event_id``); the envelope head (everything but the payload, whose counts only the
database knows) is serialized here, the payload appended by SQL.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from conductor_server.domain.model import (
    BatchRegistration,
    Outcome,
    OutcomeRecord,
    StepDefinition,
    StepState,
)
from conductor_server.state.errors import (
    ConflictingOutcome,
    EssayNotExpected,
    PermanentStateError,
    RegistrationConflict,
    StateBackendUnavailable,
    UnknownBatch,
    UnknownStep,
)
from conductor_server.state.ledger import BatchSnapshot, check_registration
from conductor_server.state.protocol import BatchState, RecordResult
from conductor_server.state.steps import StepCounts, StepTable, counted_state
from generated.huleedu.events.v1 import events_pb2
from mesh import envelope
from mesh.resource import AsyncResource
from mesh.schema import apply_migrations
from mesh.topics import EventKind

log = logging.getLogger(__name__)

MIGRATION_SOURCES = {"mesh": "mesh.sql", "conductor": "conductor_server.sql"}
SOURCE_SERVICE = "huleedu-pipeline-conductor"
COMPLETION_NAMESPACE = uuid.UUID("6f1c2a4e-8a4b-5d0e-9b7a-2f3c4d5e6f70")

_TRANSIENT = (
    OSError,  # includes TimeoutError and refused connections
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock
)

_REGISTER = "SELECT created, conflict, version FROM conductor_register_batch($1, $2, $3, $4)"
_RECORD = (
    "SELECT idx, batch_id, step, verdict, previous, succeeded, failed, total, completed "
    "FROM conductor_record_outcomes_packed("
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
)
_STATE = """
SELECT b.essay_ids, b.flags,
       array_agg(s.step) AS steps, array_agg(s.succeeded) AS succeeded,
       array_agg(s.failed) AS failed, array_agg(s.total) AS totals
FROM conductor_batches b
LEFT JOIN processing_pipeline_state s USING (batch_id)
WHERE b.batch_id = $1
GROUP BY b.batch_id
"""
_SNAPSHOT = """
SELECT b.essay_ids, b.flags, b.version, o.steps, o.essays, o.outcomes
FROM conductor_batches b,
LATERAL (SELECT array_agg(step) AS steps, array_agg(essay_id) AS essays,
                array_agg(outcome) AS outcomes
         FROM essay_step_outcomes WHERE batch_id = b.batch_id) AS o
WHERE b.batch_id = $1
"""


def completion_event_id(batch_id: str, step: str) -> str:
    """The id of the one ``BatchStepCompleted`` event of ``step`` of ``batch_id``."""
    return str(uuid.uuid5(COMPLETION_NAMESPACE, f"{batch_id}:{step}:completed"))


@contextmanager
def _unavailable() -> Iterator[None]:
    """Translate PostgreSQL client failures into ``StateBackendUnavailable``."""
    try:
        yield
    except _TRANSIENT as exc:
        raise StateBackendUnavailable("postgresql", f"{type(exc).__name__}: {exc}") from exc


@contextmanager
def _retriable_conflict() -> Iterator[None]:
    """A duplicate outcome key means a writer bypassed the batch lock: nothing was written, and
    the call can be retried (it then sees the other write)."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise StateBackendUnavailable("postgresql", f"concurrent outcome write: {exc}") from exc


def pack_columns(columns: Sequence[Sequence[str]]) -> tuple[str, list[str]]:
    """(separator, each column as one string) for ``conductor_record_outcomes_packed``.

    A column's string is its values, each preceded by the separator (an empty column is empty),
    and the separator is a character no value contains: the unit separator, which validated ids
    never do, else the next code point that passes. Counting separators proves the choice, and
    ``str.count`` runs in C, so the check costs next to nothing.
    """
    code = 0x1F
    while True:
        separator = chr(code)
        packed = [separator + separator.join(column) if column else "" for column in columns]
        if all(
            text.count(separator) == len(column)
            for text, column in zip(packed, columns, strict=True)
        ):
            return separator, packed
        code = code + 1 if code + 1 != 0xD800 else 0xE000  # surrogates are not UTF-8


@dataclass(frozen=True, slots=True)
class Registered:
    """The answer of a registration: whether it was new, and the registration's version."""

    created: bool
    version: int


class PostgresStateStore(AsyncResource):
    """Counts outcomes in PostgreSQL. Takes ownership of ``pool`` (closed by ``close``)."""

    def __init__(self, pool: asyncpg.Pool, steps: Mapping[str, StepDefinition]) -> None:
        self._pool = pool
        self._table = StepTable(steps)
        self._graph = json.dumps(
            [
                {
                    "step": name,
                    "deps": list(self._table[name].depends_on),
                    "ratio": float(self._table[name].min_success_ratio),
                }
                for name in self._table
            ]
        )
        self._closed = False

    @classmethod
    async def connect(
        cls, dsn: str, steps: Mapping[str, StepDefinition], *, min_size: int = 1, max_size: int = 10
    ) -> PostgresStateStore:
        """A store over a new pool (does not apply migrations: see ``migrate``)."""
        with _unavailable():
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
        return cls(pool, steps)

    async def migrate(self) -> None:
        """Apply pending migrations of the outbox and the pipeline state."""
        with _unavailable():
            await apply_migrations(self._pool, MIGRATION_SOURCES)

    # -- registration -----------------------------------------------------------------------

    async def register_batch(self, registration: BatchRegistration) -> bool:
        return (await self.register(registration)).created

    async def register(self, registration: BatchRegistration) -> Registered:
        """``register_batch`` that also tells the registration's version."""
        check_registration(registration)
        with _unavailable():
            row = await self._pool.fetchrow(
                _REGISTER,
                registration.batch_id,
                list(registration.essay_ids),
                sorted(registration.flags),
                self._graph,
            )
        if row["conflict"]:
            raise RegistrationConflict(registration.batch_id)
        return Registered(row["created"], row["version"])

    # -- recording --------------------------------------------------------------------------

    async def record_outcomes(self, records: Sequence[OutcomeRecord]) -> list[RecordResult]:
        results: list[RecordResult | None] = [None] * len(records)
        known = [i for i, r in enumerate(records) if r.step in self._table]
        for index, record in enumerate(records):
            if record.step not in self._table:
                results[index] = RecordResult(
                    record, error=UnknownStep(record.batch_id, record.step)
                )
        if known:
            for index, result in zip(
                known, await self._record([records[i] for i in known]), strict=True
            ):
                results[index] = result
        return [result for result in results if result is not None]

    async def _record(self, records: Sequence[OutcomeRecord]) -> list[RecordResult]:
        batches = sorted({record.batch_id for record in records})
        heads = [self._event_head(batch_id, step) for batch_id in batches for step in self._table]
        columns = [
            [r.batch_id for r in records],
            [r.step for r in records],
            [r.essay_id for r in records],
            [r.outcome.value for r in records],
            [r.output_storage_id for r in records],
            [r.event_id for r in records],
        ]
        separator, packed = pack_columns(columns)
        with _unavailable(), _retriable_conflict():
            rows = await self._pool.fetch(
                _RECORD,
                separator,
                *packed,
                self._graph,
                [h[0] for h in heads],
                [h[1] for h in heads],
                [h[2] for h in heads],
                [h[3] for h in heads],
                [h[4] for h in heads],
                EventKind.BATCH_STEP_COMPLETED.value,
            )
        own: dict[int, Any] = {}
        counts: dict[tuple[str, str], Any] = {}
        cascaded: dict[int, list[str]] = {}
        for row in rows:
            verdict = row["verdict"]
            if verdict == "counts":
                counts[row["batch_id"], row["step"]] = row
            elif verdict == "cascaded":
                cascaded.setdefault(row["idx"], []).append(row["step"])
            else:
                own[row["idx"]] = row
        states: dict[tuple[str, int, int, int], StepState] = {}  # records share end-of-call states
        plain: dict[tuple[str, str], StepState] = {}  # (batch, step) -> state after the call
        results: list[RecordResult] = []
        for index, record in enumerate(records, 1):
            row = own.get(index)
            if row is not None:
                results.append(
                    self._result(
                        record,
                        row["verdict"],
                        row["completed"],
                        row,
                        cascaded.get(index, ()),
                        states,
                    )
                )
                continue
            # Recorded without completing its step (most records): the step's counts row.
            key = (record.batch_id, record.step)
            state = plain.get(key)
            if state is None:
                state = plain[key] = self._state(record.step, counts[key], states)
            results.append(RecordResult(record, True, False, state))
        return results

    def _event_head(self, batch_id: str, step: str) -> tuple[str, str, str, bytes, str]:
        """(batch, step, event id, envelope bytes without payload, headers) for a completion."""
        event_id = completion_event_id(batch_id, step)
        event = envelope.build(
            events_pb2.BatchStepCompleted(), source_service=SOURCE_SERVICE, event_id=event_id
        )
        event.ClearField("batch_step_completed")
        headers = {name: value.decode() for name, value in envelope.headers(event)}
        return batch_id, step, event_id, envelope.encode(event), json.dumps(headers)

    def _result(
        self,
        record: OutcomeRecord,
        verdict: str,
        completed: bool,
        row: Any,
        cascaded: Sequence[str],
        states: dict[tuple[str, int, int, int], StepState],
    ) -> RecordResult:
        error: PermanentStateError | None = None
        if verdict == "unknown_batch":
            error = UnknownBatch(record.batch_id)
        elif verdict == "unknown_step":
            error = UnknownStep(record.batch_id, record.step)
        elif verdict == "not_expected":
            error = EssayNotExpected(record.batch_id, record.step, record.essay_id)
        elif verdict == "conflict":
            error = ConflictingOutcome(
                record.batch_id,
                record.step,
                record.essay_id,
                Outcome(row["previous"]),
                record.outcome,
            )
        if error is not None:
            return RecordResult(record, error=error)
        return RecordResult(
            record,
            newly_recorded=verdict == "recorded",
            completed_step=completed,
            state=self._state(record.step, row, states),
            cascaded=tuple(counted_state(self._table[name], 0, 0, 0) for name in cascaded),
        )

    def _state(
        self, step: str, row: Any, states: dict[tuple[str, int, int, int], StepState]
    ) -> StepState:
        """The step's state from a row's counts; rows of one call share end-of-call states."""
        key = (step, row["succeeded"], row["failed"], row["total"])
        state = states.get(key)
        if state is None:
            state = states[key] = counted_state(self._table[step], *key[1:])
        return state

    # -- reading ----------------------------------------------------------------------------

    async def batch_state(self, batch_id: str) -> BatchState:
        with _unavailable():
            row = await self._pool.fetchrow(_STATE, batch_id)
        if row is None:
            raise UnknownBatch(batch_id)
        registration = BatchRegistration(batch_id, tuple(row["essay_ids"]), frozenset(row["flags"]))
        counts = {
            step: StepCounts(succeeded, failed, total)
            for step, succeeded, failed, total in zip(
                row["steps"], row["succeeded"], row["failed"], row["totals"], strict=True
            )
            if step is not None
        }
        return BatchState(registration, self._table.derive(len(registration.essay_ids), counts))

    async def snapshot(self, batch_id: str) -> BatchSnapshot:
        """The batch's registration and every recorded outcome, read in one statement."""
        with _unavailable():
            row = await self._pool.fetchrow(_SNAPSHOT, batch_id)
        if row is None:
            raise UnknownBatch(batch_id)
        outcomes: dict[str, dict[str, Outcome]] = {}
        if row["steps"] is not None:
            for step, essay_id, outcome in zip(
                row["steps"], row["essays"], row["outcomes"], strict=True
            ):
                outcomes.setdefault(step, {})[essay_id] = Outcome(outcome)
        registration = BatchRegistration(batch_id, tuple(row["essay_ids"]), frozenset(row["flags"]))
        return BatchSnapshot(registration, row["version"], outcomes)

    # -- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._pool.close()
