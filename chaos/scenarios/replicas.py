"""Two replicas of each server on the same backends; one of each is killed mid-run and stays
down. The survivors take over (their consumer groups rebalance), every run ends, and WatchBatch
on the surviving BatchService shows every transition of every run, including those the killed
replica made; a watch through both addresses (the SDK's, resuming) ends on each run's state."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from bench.harness.processes import group_holdings
from chaos.check import settle
from chaos.check.findings import Findings
from chaos.check.postgres import transitions
from chaos.report import Row
from chaos.rpc import UNAVAILABLE
from chaos.trial import Context, Trial, trial
from chaos.watch import Stream, gaps, watch
from clients import BatchClient
from generated.huleedu.batch.v1 import batch_pb2

WATCHERS_END = 60.0
ASSIGNED_TIMEOUT = 60.0


async def _assigned(t: Trial) -> None:
    """Until both replicas of each server hold partitions of its group (they join in the
    background once serving): killing one that holds none would test nothing of the groups."""
    admin: Any = AIOKafkaAdminClient(bootstrap_servers=t.ctx.backends.kafka_bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + ASSIGNED_TIMEOUT
        while time.monotonic() < deadline:
            holdings = [
                await group_holdings(admin, group, set(topics))
                for group, topics in t.scope.server_groups().items()
            ]
            if all(state == "Stable" and len(held) == 2 for state, held in holdings):
                return
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    raise RuntimeError(f"the replicas did not all hold partitions within {ASSIGNED_TIMEOUT:.0f} s")


async def _resumed(target: str, batch_id: str, run_id: str) -> batch_pb2.PipelineRun | None:
    """The run as the SDK's watch (resuming on UNAVAILABLE, across both addresses) last saw
    it; None if the watch failed."""
    async with BatchClient(target) as client:
        last = None
        try:
            async for update in client.watch_batch(batch_id, run_id, timeout=300):
                last = update.run
        except Exception:  # noted by the caller as a failed watch
            return None
        return last


async def _judge_watches(
    t: Trial,
    survivor: list[asyncio.Task[Stream]],
    resumed: dict[str, asyncio.Task[batch_pb2.PipelineRun | None]],
    found: Findings,
) -> None:
    tasks = [*survivor, *resumed.values()]
    _, late = await asyncio.wait(tasks, timeout=WATCHERS_END) if tasks else (set(), set())
    for task in late:
        task.cancel()
    history = await transitions(t.mesh.database_url)
    missed = {}
    for task in survivor:
        if task in late:
            continue
        stream = task.result()
        if problems := gaps(stream, history.get(stream.run_id, [])):
            missed[stream.run_id] = problems
    if missed:
        found.problem(
            f"{len(missed)} of {len(survivor)} watches on the survivor missed transitions: "
            f"{dict(list(missed.items())[:2])}"
        )
    wrong = []
    for run_id, task in resumed.items():
        last = task.result() if task not in late else None
        final = history.get(run_id, [])
        status = batch_pb2.RunStatus.Name(last.status) if last is not None else "no update"
        if not final or status != f"RUN_STATUS_{final[-1].run_status.upper()}":
            wrong.append(f"{run_id}: {status}")
    if wrong:
        found.problem(f"{len(wrong)} resumed watches did not end on their run's state: {wrong[:3]}")
    if late:
        found.problem(f"{len(late)} watches still open after every run ended")
    found.notes.append(
        f"{len(survivor)} watches on the survivor, {len(resumed)} through both addresses"
    )


async def replica_killed(ctx: Context) -> Row:
    """SIGKILL of one conductor and one BatchService of two each, mid-run, not restarted."""
    async with trial(ctx, "replica-killed", conductors=2, batches=2) as t:
        doomed, survivor = t.mesh.batches
        both = f"ipv4:{doomed.address},{survivor.address}"
        watches: list[asyncio.Task[Stream]] = []
        resumed: dict[str, asyncio.Task[batch_pb2.PipelineRun | None]] = {}

        def follow(batch_id: str, run_id: str) -> None:
            stub = t.stubs.batches[survivor.name]
            watches.append(
                asyncio.create_task(watch(stub, t.tally, survivor.name, batch_id, run_id))
            )
            resumed[run_id] = asyncio.create_task(_resumed(both, batch_id, run_id))

        t.start(on_run=follow)
        await _assigned(t)
        await t.mid_run()
        killed = time.monotonic()
        t.mark("SIGKILL conductor-1 and batch-1")
        await asyncio.gather(t.mesh.conductors[0].kill(), doomed.kill())
        t.down |= {t.mesh.conductors[0].name, doomed.name}
        found = Findings()
        recover = await t.runs_ended(killed)
        await asyncio.sleep(ctx.profile.after)
        await t.stop()
        await settle(t.scope, t.ledger, ctx.profile.settle)
        await _judge_watches(t, watches, resumed, found)
        return await t.verdict(
            tolerated={UNAVAILABLE},
            recover=recover,
            recover_what="kill -> every run in flight ended (the groups' rebalance included)",
            findings=found,
        )
