"""What PostgreSQL holds after a scenario: the conductor's and the BatchService's tables, read
with plain SQL (no code of the servers)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from chaos.ledger import OutcomeKey
from generated.huleedu.events.v1 import events_pb2
from mesh.events.topics import EventKind

ENDED = frozenset({"completed", "completed_with_failures", "failed", "cancelled"})

_OUTCOMES = "SELECT batch_id, step, essay_id, outcome FROM essay_step_outcomes"
_COUNTS = "SELECT batch_id, step, succeeded, failed, total FROM processing_pipeline_state"
_ESSAYS = "SELECT batch_id, essay_count FROM conductor_batches"
_COMPLETIONS = """
SELECT event_id, payload, published_at IS NOT NULL AS published FROM event_outbox
 WHERE topic_kind = $1
"""
_UNPUBLISHED = "SELECT count(*) FROM event_outbox WHERE published_at IS NULL"
_RUNS = "SELECT run_id, status FROM pipeline_runs"
_BACKLOG = "SELECT batch_id FROM conductor_mirror_backlog"
_UNSATISFIED = """
SELECT run_id, step, succeeded, failed, total FROM run_steps WHERE status = 'unsatisfied'
"""
_TRANSITIONS = """
SELECT run_id, seq, step, step_status, succeeded, failed, total, run_status
  FROM run_transitions ORDER BY run_id, seq
"""


@dataclass(frozen=True, slots=True)
class Counts:
    succeeded: int
    failed: int
    total: int | None


@dataclass(frozen=True, slots=True)
class Completion:
    batch_id: str
    step: str
    published: bool


@dataclass(frozen=True, slots=True)
class Transition:
    seq: int
    step: str
    status: str
    succeeded: int
    failed: int
    total: int
    run_status: str


@dataclass(frozen=True, slots=True)
class PostgresFacts:
    outcomes: dict[OutcomeKey, bool]  # essay_step_outcomes: succeeded?
    counts: dict[tuple[str, str], Counts]  # processing_pipeline_state by (batch, step)
    essays: dict[str, int]  # conductor_batches: essay count
    completions: dict[str, Completion]  # BatchStepCompleted rows of the outbox, by event id
    unpublished: int  # outbox rows not yet relayed
    runs: dict[str, str]  # pipeline_runs: run -> status
    backlog: list[str]  # conductor_mirror_backlog
    unsatisfied: list[str]  # run steps completed unsatisfied: "run/step succeeded+failed/total"


async def read_facts(dsn: str) -> PostgresFacts:
    conn = await asyncpg.connect(dsn)
    try:
        kind = EventKind.BATCH_STEP_COMPLETED.value
        return PostgresFacts(
            outcomes={
                (r["batch_id"], r["step"], r["essay_id"]): r["outcome"] == "succeeded"
                for r in await conn.fetch(_OUTCOMES)
            },
            counts={
                (r["batch_id"], r["step"]): Counts(r["succeeded"], r["failed"], r["total"])
                for r in await conn.fetch(_COUNTS)
            },
            essays={r["batch_id"]: r["essay_count"] for r in await conn.fetch(_ESSAYS)},
            completions={
                r["event_id"]: _completion(r["payload"], r["published"])
                for r in await conn.fetch(_COMPLETIONS, kind)
            },
            unpublished=await conn.fetchval(_UNPUBLISHED),
            runs={r["run_id"]: r["status"] for r in await conn.fetch(_RUNS)},
            backlog=[r["batch_id"] for r in await conn.fetch(_BACKLOG)],
            unsatisfied=[
                f"{r['run_id']}/{r['step']} {r['succeeded']}+{r['failed']}/{r['total']}"
                for r in await conn.fetch(_UNSATISFIED)
            ],
        )
    finally:
        await conn.close()


def _completion(payload: bytes, published: bool) -> Completion:
    event = events_pb2.EventEnvelope.FromString(payload).batch_step_completed
    return Completion(event.batch_id, event.step, published)


async def transitions(dsn: str) -> dict[str, list[Transition]]:
    """Every run's transitions, in order."""
    conn = await asyncpg.connect(dsn)
    try:
        found: dict[str, list[Transition]] = {}
        for r in await conn.fetch(_TRANSITIONS):
            found.setdefault(r["run_id"], []).append(
                Transition(
                    r["seq"],
                    r["step"],
                    r["step_status"],
                    r["succeeded"],
                    r["failed"],
                    r["total"],
                    r["run_status"],
                )
            )
        return found
    finally:
        await conn.close()
