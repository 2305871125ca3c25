"""The independent checker: after a scenario, what PostgreSQL, Redis and Kafka hold, against
the ledger of what was sent. It never asks the servers, except to read a batch that a scenario's
emptied Redis lost (which is how the mirror is meant to come back).

``settle`` waits (until a deadline) for the mesh to go quiet: every run ended, the outbox
relayed, the mirror backlog empty, every consumer group's lag 0. ``check`` then reads every
backend once and judges (``judge``); whatever did not settle is reported as stuck.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from batch_server.settings import BatchOptions
from chaos.check import kafka, postgres, redis
from chaos.check.findings import Findings
from chaos.check.judge import (
    judge_kafka,
    judge_mirror,
    judge_outcomes,
    judge_progress,
    judge_registrations,
)
from chaos.ledger import Ledger
from conductor_server.settings import ConductorOptions
from launcher.workers import COMMANDS
from mesh.events.topics import EventKind, topic_name, topic_name_prefix

__all__ = ["Findings", "Scope", "check", "settle"]


@dataclass(frozen=True, slots=True)
class Scope:
    """Where one deployment's state is."""

    namespace: str
    database_url: str
    redis_url: str
    bootstrap: str
    workers_group: str  # the scenario's workers, besides the servers' groups

    def server_groups(self) -> dict[str, list[str]]:
        """The servers' consumer groups (full names) and the topics each consumes."""
        prefix, ns = topic_name_prefix(self.namespace), self.namespace
        return {
            prefix + ConductorOptions().consumer_group: [
                topic_name(EventKind.ESSAY_STEP_OUTCOME, ns)
            ],
            prefix + BatchOptions().consumer_group: [
                topic_name(EventKind.BATCH_STEP_COMPLETED, ns)
            ],
        }

    def groups(self) -> dict[str, list[str]]:
        """Every consumer group of the deployment, the workers' too, with its topics."""
        workers = topic_name_prefix(self.namespace) + self.workers_group
        commands = [topic_name(kind, self.namespace) for kind in COMMANDS]
        return {**self.server_groups(), workers: commands}


_PENDING = """
SELECT (SELECT count(*) FROM pipeline_runs WHERE run_id = ANY($1) AND status = ANY($2)),
       (SELECT count(*) FROM event_outbox WHERE published_at IS NULL),
       (SELECT count(*) FROM conductor_mirror_backlog)
"""


async def quiet(scope: Scope, ledger: Ledger) -> bool:
    """Whether the mesh has nothing left to do: runs ended, outbox and backlog empty, no lag."""
    conn = await asyncpg.connect(scope.database_url)
    try:
        ended, unpublished, backlog = await conn.fetchrow(
            _PENDING, list(ledger.runs), list(postgres.ENDED)
        )
    finally:
        await conn.close()
    if ended < len(ledger.runs) or unpublished or backlog:
        return False
    lags = await kafka.group_lag(scope.bootstrap, scope.groups())
    return not any(n for lag in lags.values() for n in lag.values())


async def settle(scope: Scope, ledger: Ledger, within: float) -> float | None:
    """Seconds until the mesh is quiet, or None if it is not within ``within`` seconds."""
    began = time.monotonic()
    while time.monotonic() - began < within:
        if await quiet(scope, ledger):
            return time.monotonic() - began
        await asyncio.sleep(0.5)
    return None


async def check(
    scope: Scope, ledger: Ledger, read_batch: Callable[[str], Awaitable[object]]
) -> Findings:
    """Read every backend once and judge. Batches Redis lacks are read with ``read_batch`` (a
    conductor RPC, which merges them from PostgreSQL) and must then be in Redis, equal."""
    facts = await postgres.read_facts(scope.database_url)
    mirror = await redis.read_mirror(scope.redis_url, facts.essays)
    found = Findings()
    found.merge(judge_outcomes(ledger, facts))
    found.merge(judge_registrations(ledger, facts))
    found.merge(judge_progress(ledger, facts))
    mirrored, absent = judge_mirror(facts, mirror)
    if absent:
        for batch_id in absent:
            await read_batch(batch_id)
        again = await redis.read_mirror(scope.redis_url, facts.essays)
        mirrored, still = judge_mirror(facts, again)
        mirrored.notes.append(f"{len(absent)} batches not in Redis until read")
        if still:
            mirrored.problem(
                f"{len(still)} batches not in Redis even after a read", stuck=len(still)
            )
    found.merge(mirrored)
    lags = await kafka.group_lag(scope.bootstrap, scope.groups())
    letters = await kafka.dead_letters(scope.bootstrap, scope.namespace)
    delivered = await kafka.completion_ids(scope.bootstrap, scope.namespace)
    found.merge(judge_kafka(ledger, facts, lags, letters, delivered))
    return found
