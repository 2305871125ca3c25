"""Faults of a process or a backend in the middle of a run: the mesh must lose nothing, count
nothing twice, and carry on once the fault is over."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from chaos.check import settle
from chaos.check.findings import Findings
from chaos.check.redis import flush, read_mirror
from chaos.report import Row
from chaos.rpc import UNAVAILABLE
from chaos.trial import Context, Trial, trial

RESTARTED = "restarted process starts -> its first RPC answered"


async def _caught_up(t: Trial, since: float, what: str, found: Findings) -> None:
    seconds = await t.runs_ended(since)
    found.notes.append(
        f"every run in flight at the {what} ended {seconds:.2f} s after it"
        if seconds is not None
        else f"runs in flight at the {what} did not end"
    )


# The first thing each server's consumer writes after a moment: an outcome counted (the
# conductor), a completion recorded (the BatchService).
_CONSUMED = {
    True: "SELECT extract(epoch FROM min(recorded_at)) FROM essay_step_outcomes "
    "WHERE recorded_at > to_timestamp($1)",
    False: "SELECT extract(epoch FROM min(recorded_at)) FROM batch_step_results "
    "WHERE recorded_at > to_timestamp($1)",
}


async def _consumed_again(t: Trial, conductor: bool, since: float, found: Findings) -> None:
    """Note how long after ``since`` (``time.time()``) the server's consumer wrote again."""
    conn = await asyncpg.connect(t.mesh.database_url)
    try:
        for _ in range(1200):
            first = await conn.fetchval(_CONSUMED[conductor], since)
            if first is not None:
                found.notes.append(
                    f"its consumer wrote again {float(first) - since:.2f} s after the kill"
                )
                return
            await asyncio.sleep(0.05)
        found.notes.append("its consumer did not write again within 60 s of the kill")
    finally:
        await conn.close()


async def _sigkill(ctx: Context, name: str, conductor: bool) -> Row:
    async with trial(ctx, name) as t:
        t.start()
        await t.mid_run()
        server = (t.mesh.conductors if conductor else t.mesh.batches)[0]
        killed, wall = time.monotonic(), time.time()
        t.mark(f"SIGKILL {server.name}")
        await server.kill()
        recover = await t.restart(server)
        found = Findings()
        await _consumed_again(t, conductor, wall, found)
        await _caught_up(t, killed, "kill", found)
        await asyncio.sleep(ctx.profile.after)
        return await t.verdict(
            tolerated={UNAVAILABLE}, recover=recover, recover_what=RESTARTED, findings=found
        )


async def sigkill_conductor(ctx: Context) -> Row:
    """SIGKILL of the conductor mid-run, restarted at once."""
    return await _sigkill(ctx, "sigkill-conductor", conductor=True)


async def sigkill_batch(ctx: Context) -> Row:
    """SIGKILL of the BatchService mid-run, restarted at once."""
    return await _sigkill(ctx, "sigkill-batch", conductor=False)


async def redis_flushall(ctx: Context) -> Row:
    """FLUSHALL mid-run, twice a second apart: PostgreSQL has every count, and the mirror comes
    back from it (on the next write or read of each batch)."""
    async with trial(ctx, "redis-flushall") as t:
        t.start()
        await t.mid_run()
        flushed = time.monotonic()
        t.mark("FLUSHALL")
        await flush(ctx.backends.redis_url)
        await asyncio.sleep(1.0)
        t.mark("second FLUSHALL")
        await flush(ctx.backends.redis_url)
        recover = await t.runs_ended(flushed)
        await asyncio.sleep(ctx.profile.after)
        return await t.verdict(
            recover=recover,
            recover_what="FLUSHALL -> every run in flight ended",
        )


async def _outcomes(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM essay_step_outcomes"))
    finally:
        await conn.close()


async def _backlog(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r[0] for r in await conn.fetch("SELECT batch_id FROM conductor_mirror_backlog")]
    finally:
        await conn.close()


async def _backlog_merged(t: Trial, within: float) -> float | None:
    """Seconds until the mirror backlog is empty."""
    began = time.monotonic()
    while time.monotonic() - began < within:
        if not await _backlog(t.mesh.database_url):
            return time.monotonic() - began
        await asyncio.sleep(0.05)
    return None


async def redis_down(ctx: Context) -> Row:
    """Redis stopped mid-run: every RPC still answers (from PostgreSQL), outcomes are still
    counted, and once Redis is back the batches written meanwhile (the mirror backlog) are
    merged into it without anyone reading them."""
    async with trial(ctx, "redis-down") as t:
        t.start()
        await t.mid_run()
        found = Findings()
        counted = await _outcomes(t.mesh.database_url)
        t.mark("Redis stopped")
        await asyncio.to_thread(ctx.stack.stop, "redis")
        await asyncio.sleep(ctx.profile.redis_outage)
        during = await _outcomes(t.mesh.database_url) - counted
        backlog = await _backlog(t.mesh.database_url)
        await asyncio.to_thread(ctx.stack.start, "redis")
        t.mark("Redis back")
        recover = await _backlog_merged(t, ctx.profile.settle)
        if not during:
            found.problem("no outcome was counted while Redis was down", stuck=1)
        found.notes.append(
            f"{during} outcomes counted while Redis was down; {len(backlog)} batches in the "
            "mirror backlog when it came back"
        )
        await asyncio.sleep(ctx.profile.after)
        await t.stop()
        await settle(t.scope, t.ledger, ctx.profile.settle)
        mirrored = await read_mirror(ctx.backends.redis_url, backlog)
        if missing := sorted(set(backlog) - set(mirrored)):
            found.problem(
                f"{len(missing)} backlog batches never merged into Redis", stuck=len(missing)
            )
        return await t.verdict(
            recover=recover,
            recover_what="Redis back -> mirror backlog merged into it",
            findings=found,
        )


async def _backend_down(ctx: Context, name: str, backend: str, tolerated: set[str]) -> Row:
    async with trial(ctx, name) as t:
        t.start()
        await t.mid_run()
        t.mark(f"{backend} stopping")
        await asyncio.to_thread(ctx.stack.stop, backend)
        await asyncio.sleep(ctx.profile.outage)
        await asyncio.to_thread(ctx.stack.start, backend)
        back = time.monotonic()
        t.mark(f"{backend} back")
        recover = await t.runs_ended(back)
        await asyncio.sleep(ctx.profile.after)
        return await t.verdict(
            tolerated=tolerated,
            recover=recover,
            recover_what=f"{backend} back -> every run in flight ended",
        )


async def kafka_down(ctx: Context) -> Row:
    """Kafka stopped mid-run and started again: consumers and relays wait and carry on; RPCs
    do not need Kafka, so every one answers."""
    return await _backend_down(ctx, "kafka-down", "kafka", set())


async def postgres_down(ctx: Context) -> Row:
    """PostgreSQL stopped mid-run and started again: RPCs that need it fail UNAVAILABLE (and
    only that), consumers retry without skipping anything."""
    return await _backend_down(ctx, "postgres-down", "postgres", {UNAVAILABLE})
