"""One scenario's run: a deployment with workers, load and probes, and its verdict.

``trial`` starts a deployment (fresh namespace and database), the demo workers and the RPC
stubs; ``Trial.start`` starts the load and one prober per server; the scenario injects its
fault; ``Trial.verdict`` stops the load, waits for the mesh to settle, runs the checker, adds
the RPC failures, stops the servers (each must exit 0) and returns the report's row.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import asyncpg

from bench.harness.backends import Backends
from chaos.check import Findings, Scope, check, settle
from chaos.deployment import Deployment, Server, deployment
from chaos.ledger import Ledger
from chaos.load import Load
from chaos.profile import Profile
from chaos.report import Row
from chaos.rpc import UNAVAILABLE, Prober, Stubs, Tally, channel, first_answer, stubs
from chaos.workers import GROUP, running_workers
from generated.huleedu.batch.v1 import batch_pb2, batch_pb2_grpc
from generated.huleedu.conductor.v1 import conductor_pb2, conductor_pb2_grpc
from scripts.devstack import Devstack

MID_RUN_TIMEOUT = 60.0
PROBE_PAUSE = 0.05
LOG_MARKS = ("ERROR", "CRITICAL", "Traceback")
RESTART_GOAL = 1.0  # seconds from a process's start to its first answer (reported, not judged)


@dataclass(frozen=True, slots=True)
class Context:
    """What every scenario runs with: the form, the backends and their control, the log folder."""

    profile: Profile
    stack: Devstack
    backends: Backends
    logs: Path


class Trial:
    def __init__(
        self, ctx: Context, scenario: str, mesh: Deployment, ledger: Ledger, stubs: Stubs
    ) -> None:
        self.ctx = ctx
        self.scenario = scenario
        self.mesh = mesh
        self.ledger = ledger
        self.stubs = stubs
        self.tally = Tally()
        self.down: set[str] = set()  # servers a scenario leaves down on purpose
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._load: Load | None = None
        self._began = time.monotonic()
        self.marks: dict[str, float] = {}  # what happened when (time.monotonic())
        self.slow: list[str] = []  # restarts slower than RESTART_GOAL

    @property
    def scope(self) -> Scope:
        b = self.ctx.backends
        return Scope(
            self.mesh.namespace, self.mesh.database_url, b.redis_url, b.kafka_bootstrap, GROUP
        )

    def start(
        self,
        on_run: Callable[[str, str], None] | None = None,
        pause: float = PROBE_PAUSE,
        probers: int = 1,
    ) -> None:
        """Start the load and ``probers`` probers per server."""
        p = self.ctx.profile
        self._load = Load(
            self.stubs,
            self.ledger,
            self.tally,
            essays=p.essays,
            interval=p.batch_interval,
            on_run=on_run,
        )
        self._tasks.append(asyncio.create_task(self._load.run(self._stop)))
        prober = Prober(self.stubs, self.tally, lambda: list(self.ledger.batches), pause)
        for server in self.mesh.servers:
            for _ in range(probers):
                self._tasks.append(asyncio.create_task(prober.run(server.name, self._stop)))

    def mark(self, what: str) -> None:
        """Note when ``what`` happened (failed calls are reported against these moments)."""
        self.marks[what] = time.monotonic()

    def when(self, moment: float) -> str:
        """``moment`` relative to the scenario's start, and to the latest mark before it."""
        text = f"+{moment - self._began:.3f} s"
        before = [(at, what) for what, at in self.marks.items() if at <= moment]
        if before:
            at, what = max(before)
            text += f" ({what} +{moment - at:.3f} s)"
        return text

    async def stop(self) -> None:
        """Stop the load (runs under way are still created) and the probers."""
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._tasks.clear()

    async def mid_run(self) -> None:
        """After ``before`` seconds of load, once a run is in flight."""
        await asyncio.sleep(self.ctx.profile.before)
        deadline = time.monotonic() + MID_RUN_TIMEOUT
        while time.monotonic() < deadline:
            if await self._running_runs():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"no run in flight after {MID_RUN_TIMEOUT:.0f} s of load")

    async def _running_runs(self) -> int:
        conn = await asyncpg.connect(self.mesh.database_url)
        try:
            return int(
                await conn.fetchval("SELECT count(*) FROM pipeline_runs WHERE status = 'running'")
            )
        finally:
            await conn.close()

    async def runs_ended(self, since: float, within: float = 120.0) -> float | None:
        """Seconds from ``since`` until every run started before it has ended (None: not
        within ``within`` seconds)."""
        runs = self.ledger.runs_before(since)
        deadline = time.monotonic() + within
        conn = await asyncpg.connect(self.mesh.database_url)
        try:
            while time.monotonic() < deadline:
                ended = await conn.fetchval(
                    "SELECT count(*) FROM pipeline_runs WHERE run_id = ANY($1) AND status NOT IN "
                    "('pending', 'running')",
                    runs,
                )
                if ended == len(runs):
                    return time.monotonic() - since
                await asyncio.sleep(0.05)
            return None
        finally:
            await conn.close()

    async def restart(self, server: Server) -> float:
        """Start ``server`` again; seconds from its start to its first answered RPC: a read of
        a batch of the load (the conductor's needs Redis or PostgreSQL, the BatchService's
        PostgreSQL), on a channel of its own that retries every 5 ms."""
        batch_id = next(iter(self.ledger.batches))
        read: Callable[[], Awaitable[object]]
        async with channel(server.address) as chan:
            self.mark(f"{server.name} restarted")
            await server.start(serving=False)
            if server in self.mesh.conductors:
                conductor = conductor_pb2_grpc.PipelineConductorServiceStub(chan)
                state = conductor_pb2.GetBatchPipelineStateRequest(batch_id=batch_id)
                read = partial(conductor.GetBatchPipelineState, state, timeout=1)
            else:
                batches = batch_pb2_grpc.BatchServiceStub(chan)
                status = batch_pb2.GetBatchStatusRequest(batch_id=batch_id)
                read = partial(batches.GetBatchStatus, status, timeout=1)
            seconds = await first_answer(read, server.started_at)
        if seconds > RESTART_GOAL:
            self.slow.append(f"{server.name} answered {seconds:.2f} s after its start")
        return seconds

    async def read_batch(self, batch_id: str) -> object:
        """GetBatchPipelineState on a conductor that runs (how a lost mirror comes back)."""
        name = next(s.name for s in self.mesh.conductors if s.running)
        request = conductor_pb2.GetBatchPipelineStateRequest(batch_id=batch_id)
        return await self.stubs.conductors[name].GetBatchPipelineState(request, timeout=10)

    async def verdict(
        self,
        *,
        tolerated: Collection[str] = (),
        recover: float | None = None,
        recover_what: str = "",
        findings: Findings | None = None,
    ) -> Row:
        """Stop the load, settle, check, stop the servers: the scenario's row."""
        await self.stop()
        found = findings or Findings()
        settled = await settle(self.scope, self.ledger, self.ctx.profile.settle)
        found.merge(await check(self.scope, self.ledger, self.read_batch))
        found.notes.append(
            f"settled {settled:.1f} s after the load stopped"
            if settled is not None
            else f"NOT settled {self.ctx.profile.settle:.0f} s after the load stopped"
        )
        self._judge_calls(found, frozenset(tolerated))
        found.notes += [f"restart goal ({RESTART_GOAL:.0f} s) missed: {slow}" for slow in self.slow]
        await self._judge_servers(found)
        return Row(
            scenario=self.scenario,
            records=self.ledger.records,
            findings=found,
            failed_rpcs=len(self.tally.failed(frozenset(tolerated))),
            unavailable=self.tally.count(UNAVAILABLE),
            calls=len(self.tally.calls),
            recover=recover,
            recover_what=recover_what,
            seconds=time.monotonic() - self._began,
            logs=str(self.ctx.logs),
        )

    def _judge_calls(self, found: Findings, tolerated: frozenset[str]) -> None:
        failed = self.tally.failed(tolerated)
        if failed:
            kinds = Counter(f"{c.server} {c.method} {c.code}" for c in failed)
            found.problem(f"{len(failed)} RPCs failed: {dict(kinds.most_common(6))}")
            found.notes += [
                f"failed: {c.server} {c.method} {c.code} started {self.when(c.at)}, took "
                f"{c.seconds:.3f} s"
                for c in failed[:5]
            ]
        if self._load is not None and self._load.gave_up:
            found.problem(
                f"the load gave up {len(self._load.gave_up)} times: {self._load.gave_up[:2]}"
            )
        codes = self.tally.codes()
        found.notes.append(f"{len(self.tally.calls)} RPCs: {dict(codes.most_common())}")

    async def _judge_servers(self, found: Findings) -> None:
        for server in self.mesh.servers:
            if server.name in self.down:
                continue
            if not server.running:
                code = server.process.proc.returncode if server.process else None
                found.problem(f"{server.name} had exited ({code}) before the end")
                continue
            code = await server.terminate()
            if code != 0:
                found.problem(f"{server.name} exited {code} on SIGTERM")
        for server in self.mesh.servers:
            marks = Counter(
                m for line in server.text().splitlines() for m in LOG_MARKS if m in line
            )
            if marks:
                found.notes.append(f"{server.name} log: {dict(marks)}")


@asynccontextmanager
async def trial(
    ctx: Context,
    scenario: str,
    *,
    conductors: int = 1,
    batches: int = 1,
    env: dict[str, str] | None = None,
    duplicate_share: float = 0.0,
    producers: int = 1,
    namespace: str | None = None,
) -> AsyncIterator[Trial]:
    """A deployment with workers and stubs for ``scenario`` (see the module docstring)."""
    namespace = namespace or f"chaos{secrets.token_hex(4)}"
    p, b = ctx.profile, ctx.backends
    async with deployment(
        b, namespace, ctx.logs, conductors=conductors, batches=batches, extra_env=env
    ) as mesh:
        ledger = Ledger()
        async with (
            running_workers(
                b.kafka_bootstrap,
                namespace,
                ledger,
                delay=p.worker_delay,
                failure_rate=p.failure_rate,
                duplicate_share=duplicate_share,
                producers=producers,
            ),
            stubs(
                {s.name: s.address for s in mesh.conductors},
                {s.name: s.address for s in mesh.batches},
            ) as opened,
        ):
            running = Trial(ctx, scenario, mesh, ledger, opened)
            try:
                yield running
            finally:
                await running.stop()


def server_named(mesh: Deployment, name: str) -> Server:
    return next(s for s in mesh.servers if s.name == name)
