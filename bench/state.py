"""State store throughput: the composed store (PostgreSQL, mirrored into Redis) in calls of 500
outcomes vs the reference implementation's per-outcome WATCH/MULTI/EXEC on the same Redis.

Ours: ``ComposedStateStore.record_outcomes`` with 500 outcomes per call: one PostgreSQL
transaction (lock and stamp the batch; count with the rule in Python on the tally the store
kept from its own last write of the batch, or on its counts and the named essays' outcomes
read when it kept none; COPY the new outcomes, update the counts, write the completion events
to the outbox), then one Redis script call merging the batch's counts; exact and idempotent.
Baseline: for each outcome, GET the essay's JSON document, WATCH it, MULTI, SETEX the updated
document + DEL the batch summary, EXEC, retried on a watch conflict with backoff, as the
reference BCS does (it counts nothing; "complete" is computed later by SCAN). For context, the
PostgreSQL store alone (no Redis mirror) runs the same calls. All run ``--writers`` concurrent
writers, each on its own batch, in interleaved rounds; a rate is outcomes over wall time,
"best" is the fastest round (other load only slows a run down), the JSON's
``ours``/``baseline``/``ratio`` use the best rounds.

Needs Redis and PostgreSQL: ``REDIS_URL`` and ``DATABASE_URL`` (``. .devstack/env``), else a
private devstack is started and stopped. Usage: ``python -m bench.state [--quick]``; the last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from bench.harness.backends import Backends, backends, scratch_database
from conductor_server.domain.counting import StepTable
from conductor_server.domain.model import BatchRegistration, Outcome, OutcomeRecord, StepDefinition
from conductor_server.ports import StateStore
from conductor_server.store.composed import ComposedStateStore
from conductor_server.store.postgres import MIGRATIONS, PostgresStateStore
from conductor_server.store.redis_mirror import RedisMirror, redis_client
from mesh.postgres.pool import postgres_pool

STEPS = {
    "spellcheck": StepDefinition("spellcheck", "spellchecker", "spellcheck"),
    "nlp": StepDefinition("nlp", "nlp", "nlp", depends_on=("spellcheck",)),
}
BATCH_SIZE = 500
OURS = "composed store, calls of 500"
POSTGRES_ONLY = "PostgreSQL store alone, calls of 500"
BASELINE = "per-outcome WATCH/MULTI/EXEC (baseline)"
WEEK = 7 * 24 * 3600


@dataclass
class Round:
    """One timed run of one contender."""

    outcomes: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # per call, seconds

    @property
    def rate(self) -> float:
        return self.outcomes / self.seconds


def outcomes_of(batch_id: str, essays: int) -> list[OutcomeRecord]:
    """Every essay through spellcheck, then nlp (nlp becomes ready when spellcheck completes)."""
    return [
        OutcomeRecord(batch_id, step, f"essay-{i:05d}", Outcome.SUCCEEDED)
        for step in STEPS
        for i in range(essays)
    ]


async def run_ours(store: StateStore, run: str, writers: int, essays: int) -> Round:
    batches = [f"{run}-ours-{w}" for w in range(writers)]
    for batch_id in batches:
        ids = tuple(f"essay-{i:05d}" for i in range(essays))
        await store.register_batch(BatchRegistration(batch_id, ids))
    latencies: list[float] = []
    work = {batch_id: outcomes_of(batch_id, essays) for batch_id in batches}  # built untimed

    async def writer(batch_id: str) -> None:
        records = work[batch_id]
        for start in range(0, len(records), BATCH_SIZE):
            began = time.perf_counter()
            results = await store.record_outcomes(records[start : start + BATCH_SIZE])
            latencies.append(time.perf_counter() - began)
            if not all(result.newly_recorded for result in results):
                raise RuntimeError(f"batch {batch_id}: an outcome was not counted")

    began = time.perf_counter()
    await asyncio.gather(*(writer(batch_id) for batch_id in batches))
    seconds = time.perf_counter() - began
    for batch_id in batches:  # the counts are exact
        state = await store.batch_state(batch_id)
        if any(step.succeeded != essays for step in state.steps):
            raise RuntimeError(f"batch {batch_id}: wrong counts {state.steps}")
    return Round(writers * essays * len(STEPS), seconds, latencies)


async def reference_write(
    client: Redis, command: Callable[..., Awaitable[Any]], run: str, record: OutcomeRecord
) -> None:
    """One outcome the reference way: GET, WATCH, MULTI, SETEX + DEL, EXEC; 5 tries."""
    key = f"bench:{run}:essay_state:{record.batch_id}:{record.essay_id}"
    summary = f"bench:{run}:batch_summary:{record.batch_id}"
    now = time.time()
    for attempt in range(5):
        raw = await command("GET", key)
        document = json.loads(raw) if raw else {"completed_steps": [], "step_metadata": {}}
        if record.step not in document["completed_steps"]:
            document["completed_steps"].append(record.step)
        document["step_metadata"][record.step] = {"status": record.outcome.value, "at": now}
        document["last_updated"] = now
        async with client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.execute_command("SETEX", key, WEEK, json.dumps(document))
                pipe.execute_command("DEL", summary)
                await pipe.execute()
                return
            except redis_errors.WatchError:
                await asyncio.sleep(0.01 * 2**attempt + random.uniform(0, 0.01))
    await command("SETEX", key, WEEK, json.dumps(document))  # the reference's non-atomic fallback


async def run_baseline(client: Redis, run: str, writers: int, essays: int) -> Round:
    command: Callable[..., Awaitable[Any]] = client.execute_command
    latencies: list[float] = []
    batches = [f"{run}-ref-{w}" for w in range(writers)]
    work = {batch_id: outcomes_of(batch_id, essays) for batch_id in batches}  # built untimed

    async def writer(batch_id: str) -> None:
        for record in work[batch_id]:
            began = time.perf_counter()
            await reference_write(client, command, run, record)
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(writer(batch_id) for batch_id in batches))
    seconds = time.perf_counter() - began
    return Round(writers * essays * len(STEPS), seconds, latencies)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(rounds: dict[str, list[Round]]) -> str:
    lines = [
        f"| {'outcomes/s':<41} | {'best':>7} | {'median':>7} | {'call p50 ms':>11} "
        f"| {'call p99 ms':>11} |",
        f"|{'-' * 43}|{'-' * 9}|{'-' * 9}|{'-' * 13}|{'-' * 13}|",
    ]
    for name, runs in rounds.items():
        latencies = [latency for run in runs for latency in run.latencies]
        lines.append(
            f"| {name:<41} | {max(r.rate for r in runs):>7,.0f} "
            f"| {statistics.median(r.rate for r in runs):>7,.0f} "
            f"| {percentile(latencies, 0.5) * 1000:>11.2f} "
            f"| {percentile(latencies, 0.99) * 1000:>11.2f} |"
        )
    return "\n".join(lines)


async def measure(stack: Backends, argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 20 s)")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--rounds", type=int)
    args = parser.parse_args(argv)
    rounds_wanted = args.rounds or (2 if args.quick else 3)
    essays = 1250 if args.quick else 5000  # ours: writers x 2 steps x essays outcomes a round
    reference_essays = essays // 4  # the baseline is slow; its rate does not depend on size
    run = f"bench{uuid.uuid4().hex[:8]}"
    rounds: dict[str, list[Round]] = {OURS: [], POSTGRES_ONLY: [], BASELINE: []}

    async with (
        scratch_database(stack.database_url) as database,
        postgres_pool(database, args.writers, MIGRATIONS) as pool,
        redis_client(stack.redis_url) as mirror_client,
        RedisMirror(mirror_client, StepTable(STEPS)) as mirror,
    ):
        durable = PostgresStateStore(pool, STEPS)
        store = ComposedStateStore(durable, mirror)
        client = Redis.from_url(stack.redis_url, decode_responses=True)
        try:
            for number in range(rounds_wanted):
                tag = f"{run}r{number}"
                rounds[OURS].append(await run_ours(store, tag, args.writers, essays))
                rounds[POSTGRES_ONLY].append(
                    await run_ours(durable, f"{tag}pg", args.writers, essays)
                )
                rounds[BASELINE].append(
                    await run_baseline(client, tag, args.writers, reference_essays)
                )
                print(
                    f"round {number + 1}: ours {rounds[OURS][-1].rate:,.0f}/s, "
                    f"postgresql alone {rounds[POSTGRES_ONLY][-1].rate:,.0f}/s, "
                    f"baseline {rounds[BASELINE][-1].rate:,.0f}/s",
                    file=sys.stderr,
                )
        finally:
            async for key in client.scan_iter(match=f"batch:{{{run}*", count=1000):
                await client.delete(key)
            async for key in client.scan_iter(match=f"bench:{run}*", count=1000):
                await client.delete(key)
            await client.aclose()

    print(table(rounds))
    ours = max(r.rate for r in rounds[OURS])
    baseline = max(r.rate for r in rounds[BASELINE])
    ours_latency = [latency for r in rounds[OURS] for latency in r.latencies]
    baseline_latency = [latency for r in rounds[BASELINE] for latency in r.latencies]
    result = {
        "bench": "state",
        "ours": round(ours),
        "baseline": round(baseline),
        "unit": "outcomes/s",
        "ratio": round(ours / baseline, 2),
        "ours_median": round(statistics.median(r.rate for r in rounds[OURS])),
        "postgres_only": round(max(r.rate for r in rounds[POSTGRES_ONLY])),
        "baseline_median": round(statistics.median(r.rate for r in rounds[BASELINE])),
        "batch_size": BATCH_SIZE,
        "writers": args.writers,
        "rounds": rounds_wanted,
        "outcomes_per_round": rounds[OURS][0].outcomes,
        "baseline_outcomes_per_round": rounds[BASELINE][0].outcomes,
        "ours_call_p50_ms": round(percentile(ours_latency, 0.5) * 1000, 2),
        "ours_call_p99_ms": round(percentile(ours_latency, 0.99) * 1000, 2),
        "baseline_call_p50_ms": round(percentile(baseline_latency, 0.5) * 1000, 3),
        "baseline_call_p99_ms": round(percentile(baseline_latency, 0.99) * 1000, 3),
    }
    print(json.dumps(result))
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    with backends() as stack:
        return asyncio.run(measure(stack, argv))


if __name__ == "__main__":
    main()
