"""Counts are exact under concurrency, redelivery, a Redis flush, crashes between writes and
merges that arrive out of order.

One batch of 2,500 essays runs spellcheck, then nlp and cj_assessment (which expect the 2,250
essays that passed spellcheck): 7,000 distinct outcomes, delivered as 10,000 records (30%
repeats) by 50 concurrent writers through two composed stores (two "replicas" with their own
connections), while a reader checks every state it sees.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg
import pytest
from redis.asyncio import Redis

from conductor_server.domain.counting import StepTable
from conductor_server.domain.model import (
    BatchRegistration,
    Outcome,
    OutcomeRecord,
    StepDefinition,
    StepStatus,
)
from conductor_server.events import completion_event_id
from conductor_server.ports import BatchState, RecordResult
from conductor_server.store.composed import ComposedStateStore
from conductor_server.store.errors import StateBackendUnavailable
from conductor_server.store.memory import MemoryStateStore
from conductor_server.store.postgres import PostgresStateStore
from conductor_server.store.redis_mirror import RedisMirror
from mesh.events import envelope
from tests.support.stores import pool_of

S, F = Outcome.SUCCEEDED, Outcome.FAILED
STEPS = {
    step.name: step
    for step in (
        StepDefinition("spellcheck", "spellchecker", "spellcheck", min_success_ratio=0.85),
        StepDefinition("nlp", "nlp", "nlp", depends_on=("spellcheck",), min_success_ratio=0.9),
        StepDefinition(
            "cj_assessment",
            "cj",
            "cj_assessment",
            depends_on=("spellcheck",),
            min_success_ratio=0.5,
        ),
    )
}
TABLE = StepTable(STEPS)
BATCH = "batch-exact"
ESSAYS = tuple(f"essay-{i:05d}" for i in range(2500))
WRITERS = 50
DELIVERIES = 10_000


class SimulatedCrash(Exception):
    """The process died between two writes."""


class Writer(Protocol):
    async def record_outcomes(self, records: Sequence[OutcomeRecord]) -> list[RecordResult]: ...


class Reader(Protocol):
    async def batch_state(self, batch_id: str) -> BatchState: ...


@dataclass
class Workload:
    """Two phases of shuffled records (spellcheck; then nlp and cj_assessment), repeats included."""

    phases: list[list[OutcomeRecord]]
    distinct: list[OutcomeRecord]

    @classmethod
    def make(cls, rng: random.Random) -> Workload:
        spellcheck = {e: F if i % 10 == 3 else S for i, e in enumerate(ESSAYS)}
        passed = [e for e in ESSAYS if spellcheck[e] is S]
        nlp = {e: F if rng.random() < 0.04 else S for e in passed}
        cj = {e: F if rng.random() < 0.3 else S for e in passed}
        first = [record("spellcheck", e, o) for e, o in spellcheck.items()]
        second = [record("nlp", e, o) for e, o in nlp.items()]
        second += [record("cj_assessment", e, o) for e, o in cj.items()]
        distinct = first + second
        repeats = DELIVERIES - len(distinct)
        phases = []
        for phase in (first, second):
            share = round(repeats * len(phase) / len(distinct))
            deliveries = phase + [rng.choice(phase) for _ in range(share)]
            rng.shuffle(deliveries)
            phases.append(deliveries)
        phases[-1] += [rng.choice(second) for _ in range(DELIVERIES - sum(map(len, phases)))]
        return cls(phases, distinct)

    async def expected(self) -> BatchState:
        async with MemoryStateStore(STEPS) as oracle:
            await oracle.register_batch(BatchRegistration(BATCH, ESSAYS))
            await oracle.record_outcomes(self.distinct)
            return await oracle.batch_state(BATCH)


def record(step: str, essay: str, outcome: Outcome) -> OutcomeRecord:
    return OutcomeRecord(BATCH, step, essay, outcome, event_id=f"{step}/{essay}")


def chunks(rng: random.Random, records: Sequence[OutcomeRecord]) -> list[list[OutcomeRecord]]:
    """``records`` split among the writers, each share cut into chunks of 1 to 250."""
    found: list[list[OutcomeRecord]] = []
    for writer in range(WRITERS):
        share = list(records[writer::WRITERS])
        while share:
            size = rng.randint(1, 250)
            found.append(share[:size])
            share = share[size:]
    return found


@dataclass
class Run:
    """What the writers saw."""

    results: list[RecordResult] = field(default_factory=list)
    crashed: list[list[OutcomeRecord]] = field(default_factory=list)
    delivered: int = 0
    halfway: asyncio.Event = field(default_factory=asyncio.Event)


class Harness:
    """Two replicas of the composed store over the same servers, and direct access to both."""

    def __init__(self, redis_url: str, database_url: str, stack: AsyncExitStack) -> None:
        self.redis_url = redis_url
        self.database_url = database_url
        self._stack = stack
        self.stores: list[ComposedStateStore] = []
        self.durable: PostgresStateStore | None = None
        self.redis: Redis | None = None

    async def replica(self, mirror: type[RedisMirror] = RedisMirror) -> ComposedStateStore:
        """A composed store with connections of its own (a conductor process)."""
        pool = await self._stack.enter_async_context(pool_of(self.database_url, size=8))
        client = await self._stack.enter_async_context(Redis.from_url(self.redis_url))
        reads = await self._stack.enter_async_context(mirror(client, TABLE))
        store = ComposedStateStore(PostgresStateStore(pool, STEPS), reads)
        self.stores.append(store)
        return store

    async def start(self) -> list[ComposedStateStore]:
        pool = await self._stack.enter_async_context(pool_of(self.database_url, size=2))
        self.durable = PostgresStateStore(pool, STEPS)
        self.redis = await self._stack.enter_async_context(Redis.from_url(self.redis_url))
        replicas = [await self.replica(), await self.replica()]
        assert await replicas[0].register_batch(BatchRegistration(BATCH, ESSAYS))
        return replicas

    async def redis_view(self) -> BatchState:
        assert self.redis is not None
        async with RedisMirror(self.redis, TABLE) as mirror:
            state = await mirror.read(BATCH)
        assert state is not None
        return state

    async def check_converged(self, expected: BatchState) -> None:
        """Every view of the batch is exact, and the outbox holds one event per step."""
        assert self.durable is not None
        assert await self.durable.batch_state(BATCH) == expected
        assert await self.redis_view() == expected
        for store in self.stores:
            assert await store.batch_state(BATCH) == expected
        conn = await asyncpg.connect(self.database_url)
        try:
            rows = await conn.fetch("SELECT event_id, message_key, payload FROM event_outbox")
        finally:
            await conn.close()
        assert sorted(r["event_id"] for r in rows) == sorted(
            completion_event_id(BATCH, step) for step in STEPS
        )
        for row in rows:
            event = envelope.decode(bytes(row["payload"]), accept={"batch_step_completed"})
            assert event.event_id == row["event_id"]
            assert bytes(row["message_key"]) == BATCH.encode()
            done = event.batch_step_completed
            state = expected.step(done.step)
            assert (done.batch_id, done.succeeded, done.failed, done.total) == (
                BATCH,
                state.succeeded,
                state.failed,
                state.total,
            )
            assert done.satisfied == (state.status is StepStatus.SATISFIED)


@pytest.fixture
async def harness(redis_url: str, database_url: str) -> AsyncIterator[Harness]:
    async with AsyncExitStack() as stack:
        yield Harness(redis_url, database_url, stack)


async def deliver(stores: Sequence[Writer], work: list[list[OutcomeRecord]], run: Run) -> None:
    """50 writers take chunks from ``work``, writer i through replica i % 2.

    A transient failure is retried (as the consumer does); a ``SimulatedCrash`` leaves the chunk
    for redelivery after a "restart".
    """

    async def writer(index: int) -> None:
        store = stores[index % len(stores)]
        while work:
            chunk = work.pop()
            for _ in range(200):
                try:
                    run.results += await store.record_outcomes(chunk)
                    break
                except SimulatedCrash:
                    run.crashed.append(chunk)
                    break
                except StateBackendUnavailable:
                    await asyncio.sleep(0.01)  # back off before the retry, as the consumer does
            else:
                raise AssertionError("a chunk kept failing")
            run.delivered += len(chunk)
            if run.delivered >= DELIVERIES // 2:
                run.halfway.set()

    async with asyncio.TaskGroup() as group:
        for index in range(WRITERS):
            group.create_task(writer(index))


async def watch(stores: Sequence[Reader], stop: asyncio.Event, monotonic: bool) -> int:
    """Read the batch until ``stop``: counts never exceed the total (and, when ``monotonic``,
    never go back in what the first store shows)."""
    reads = 0
    seen: dict[str, int] = {}
    while not stop.is_set() or reads == 0:
        store = stores[reads % len(stores)]
        state = await store.batch_state(BATCH)
        for step in state.steps:
            counted = step.succeeded + step.failed
            assert counted <= step.total <= len(ESSAYS), step
            if monotonic and store is stores[0]:
                assert counted >= seen.get(step.step, 0), (step, seen)
                seen[step.step] = counted
        reads += 1
        await asyncio.sleep(0)  # let the writers run between two reads
    return reads


async def run_phases(
    stores: Sequence[Writer],
    readers: Sequence[Reader],
    workload: Workload,
    rng: random.Random,
    *,
    midway: Callable[[], Awaitable[None]] | None = None,
    after_phase: Callable[[Run], Awaitable[None]] | None = None,
    monotonic: bool = True,
    run: Run | None = None,
) -> Run:
    """Deliver both phases while a reader watches; await ``midway()`` once half is delivered
    and ``after_phase(run)`` after each phase."""
    run = run or Run()
    stop = asyncio.Event()

    async def trigger(midway: Callable[[], Awaitable[None]]) -> None:
        await run.halfway.wait()
        await midway()

    async with asyncio.TaskGroup() as group:
        reader = group.create_task(watch(readers, stop, monotonic))
        if midway is not None:
            group.create_task(trigger(midway))
        for phase in workload.phases:
            await deliver(stores, chunks(rng, phase), run)
            if after_phase is not None:
                await after_phase(run)
        stop.set()
    assert reader.result() > 0
    return run


def completions(results: Sequence[RecordResult]) -> dict[str, int]:
    counted = dict.fromkeys(STEPS, 0)
    for result in results:
        if result.completed_step:
            counted[result.record.step] += 1
    return counted


@pytest.mark.parametrize("flush", [False, True], ids=["steady", "redis-flushed-midway"])
async def test_concurrent_writers_count_every_outcome_exactly_once(
    harness: Harness, redis_url: str, flush: bool
) -> None:
    rng = random.Random(5)
    workload = Workload.make(rng)
    stores = await harness.start()
    assert harness.durable is not None

    flushed_after: list[int] = []  # deliveries done when Redis lost everything

    async def flush_redis() -> None:
        async with Redis.from_url(redis_url) as admin:
            await admin.flushall()
            await admin.script_flush()
        flushed_after.append(run.delivered)

    readers: list[Reader] = [stores[0], harness.durable]
    run = Run()
    await run_phases(stores, readers, workload, rng, midway=flush_redis if flush else None, run=run)

    assert run.delivered == DELIVERIES
    assert not run.crashed
    assert all(result.ok for result in run.results)
    assert sum(result.newly_recorded for result in run.results) == len(workload.distinct) == 7000
    assert completions(run.results) == dict.fromkeys(STEPS, 1)
    # Redis lost every batch while writers were still writing, and converged all the same: the
    # next write of the batch (it merges the whole state) or read (a miss) put it back.
    assert len(flushed_after) == (1 if flush else 0)
    assert all(0 < delivered < DELIVERIES for delivered in flushed_after)
    await harness.check_converged(await workload.expected())


class CrashingMirror(RedisMirror):
    """Dies after PostgreSQL committed, before Redis is written, three times in ten."""

    crash = random.Random(7)

    async def merge(self, states: Sequence[BatchState]) -> None:
        if self.crash.random() < 0.3:
            raise SimulatedCrash
        await super().merge(states)


async def test_a_crash_between_the_postgres_and_the_redis_write_converges(
    harness: Harness,
) -> None:
    rng = random.Random(7)
    workload = Workload.make(rng)
    await harness.start()
    crashing = [await harness.replica(CrashingMirror) for _ in range(2)]

    run = await run_phases(crashing, [crashing[0]], workload, rng)
    assert run.crashed

    # Before redelivery, Redis may lag PostgreSQL but never exceeds it.
    assert harness.durable is not None
    durable = await harness.durable.batch_state(BATCH)
    hot = await harness.redis_view()
    for lagging, authority in zip(hot.steps, durable.steps, strict=True):
        assert lagging.succeeded <= authority.succeeded
        assert lagging.failed <= authority.failed

    # The restarted conductor gets the crashed chunks again (offsets were never committed).
    restarted = [await harness.replica(), await harness.replica()]
    replay = Run()
    await deliver(restarted, run.crashed, replay)
    results = run.results + replay.results
    assert all(result.ok for result in results)
    assert not any(result.newly_recorded for result in replay.results)
    assert sum(result.newly_recorded for result in run.results) <= len(workload.distinct)
    await harness.check_converged(await workload.expected())


class LateMirror(RedisMirror):
    """Merges after a random delay, so merges of two replicas overtake one another."""

    delays = random.Random(11)

    async def merge(self, states: Sequence[BatchState]) -> None:
        await asyncio.sleep(self.delays.random() * 0.02)  # the random delay of this merge
        await super().merge(states)


async def test_merges_arriving_out_of_order_never_take_redis_back(harness: Harness) -> None:
    rng = random.Random(11)
    workload = Workload.make(rng)
    await harness.start()
    late = [await harness.replica(LateMirror), await harness.replica(LateMirror)]

    class RedisReader:  # what a read of the mirror alone sees, while the writers run
        async def batch_state(self, batch_id: str) -> BatchState:
            return await harness.redis_view()

    run = await run_phases(late, [RedisReader()], workload, rng, monotonic=True)
    assert sum(result.newly_recorded for result in run.results) == len(workload.distinct)
    assert completions(run.results) == dict.fromkeys(STEPS, 1)
    await harness.check_converged(await workload.expected())
