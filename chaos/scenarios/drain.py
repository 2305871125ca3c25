"""SIGTERM under load: each server drains (still serving while NOT_SERVING for DRAIN_SECONDS,
then refusing new calls, in-flight ones finishing), exits 0, and is started again. No call ends
CANCELLED; every call refused ends UNAVAILABLE; open WatchBatch streams end UNAVAILABLE."""

from __future__ import annotations

import asyncio
import time

from chaos.check import settle
from chaos.check.findings import Findings
from chaos.deployment import Server
from chaos.report import Row
from chaos.rpc import CANCELLED, OK, UNAVAILABLE
from chaos.trial import Context, Trial, trial
from chaos.watch import Stream, watch

WATCHERS_END = 30.0


async def _terminate(t: Trial, server: Server, found: Findings) -> float:
    """SIGTERM ``server`` under load, note how it went, start it again; seconds from its new
    start to its first answer."""
    termed = time.monotonic()
    t.mark(f"SIGTERM {server.name}")
    code = await server.terminate()
    gone = time.monotonic()
    t.mark(f"{server.name} exited")
    answered = sum(
        1 for c in t.tally.calls if c.server == server.name and c.at >= termed and c.code == OK
    )
    found.notes.append(
        f"{server.name}: SIGTERM -> exit {code} in {gone - termed:.2f} s; {answered} calls "
        "made after the SIGTERM answered OK (the drain)"
    )
    if code != 0:
        found.problem(f"{server.name} exited {code} on SIGTERM under load")
    return await t.restart(server)


async def sigterm_under_load(ctx: Context) -> Row:
    """SIGTERM of the conductor, then of the BatchService, each under load and restarted."""
    p = ctx.profile
    env = {"DRAIN_SECONDS": str(p.drain_seconds), "SHUTDOWN_GRACE_SECONDS": "10"}
    async with trial(ctx, "sigterm-under-load", env=env) as t:
        streams: list[asyncio.Task[Stream]] = []
        stub = t.stubs.batches["batch-1"]

        def follow(batch_id: str, run_id: str) -> None:
            streams.append(asyncio.create_task(watch(stub, t.tally, "batch-1", batch_id, run_id)))

        t.start(on_run=follow, pause=0.0, probers=p.hammer)
        await t.mid_run()
        found = Findings()
        recover = []
        for server in (t.mesh.conductors[0], t.mesh.batches[0]):
            recover.append(await _terminate(t, server, found))
            await asyncio.sleep(p.before)
        await asyncio.sleep(p.after)
        await t.stop()
        await settle(t.scope, t.ledger, p.settle)
        done, late = (
            await asyncio.wait(streams, timeout=WATCHERS_END) if streams else (set(), set())
        )
        for task in late:
            task.cancel()
        cut = sum(1 for task in done if task.result().code == UNAVAILABLE)
        found.notes.append(
            f"{len(streams)} WatchBatch streams: {cut} ended UNAVAILABLE by a drain, "
            f"{len(late)} still open after the runs ended"
        )
        if late:
            found.problem(f"{len(late)} WatchBatch streams did not end with their run")
        found.notes.append(f"{t.tally.count(CANCELLED)} calls ended CANCELLED")
        return await t.verdict(
            tolerated={UNAVAILABLE},
            recover=max(recover),
            recover_what="restarted after its SIGTERM -> first RPC answered (the slower server)",
            findings=found,
        )
