"""Step transitions and whole runs, what a user waits for, against the Kafka round trip as floor.

Setup: Redis, PostgreSQL and Kafka of the environment (``REDIS_URL``, ``DATABASE_URL``,
``KAFKA_BOOTSTRAP_SERVERS``; ``. .devstack/env``), else a private devstack started and stopped
here; a fresh PostgreSQL database and Kafka namespace (3 partitions a topic) per invocation.
Both servers run as a user runs them (``python -m conductor_server``, ``python -m batch_server``,
``LOG_LEVEL=WARNING``, logs in ``.cache/bench/pipeline-*.log``), the demo workers as
``--worker-processes`` processes of ``python -m launcher.workers`` (one consumer group, no
delay, every essay succeeds). The client is the SDK (``clients.BatchClient``): a batch of N short
essays with the flag ``prompt_attached`` runs ``comprehensive`` (spellcheck; nlp and
cj_assessment after it; ai_feedback after spellcheck and nlp), one batch at a time. Creating a
batch is not timed; one 100-essay run warms up first.

Transition latency (the headline): for each step of a run that has dependencies (read from the
pipeline definitions: 3 a run), the Kafka timestamp (CreateTime, set by the producer) of its
first StepCommand minus the latest timestamp of its dependencies' last EssayStepOutcome. 30
runs (``--quick``: 5) at 100, 1,000 and 10,000 (not with ``--quick``) essays. The records are
read after each run by a consumer without a group, assigned every partition of the outcome and
command topics and paused while a run is timed, so observing costs a run nothing. Percentiles
are nearest rank (the value at index floor(q n) of the sorted values); timestamps are whole ms.

Floor (baseline): two hops over the mesh's own bus (``KafkaBus``: its producer, idempotent,
acks=all, and its consumer runner): a small envelope written to topic A, a consumer on A writes
it to topic B at once, a consumer on B receives it; the time from the write on A to the receipt
on B, one trip at a time, in this process, in equal chunks before each size (300 trips;
``--quick``: 200). ``ratio`` = transition p50 at 1,000 essays / floor p50: a transition is two
such hops (outcome to the conductor, completion to the BatchService) plus both servers' work.

Whole runs: wall time from StartPipeline returning to WatchBatch reporting the run finished.
CPU µs per essay-step of each process (utime+stime from ``/proc`` around each timed run;
workers summed) = CPU / (essays x 4 steps x runs). Memory: VmRSS and VmHWM (peak RSS, MiB) of
each server after each 10,000-essay run; "10,000" is the peak after the first of them,
"100,000" after the tenth (100,000 essays in batches of 10,000, one after another); no growth
means VmRSS after the tenth is at most 10% above VmRSS after the first.

Goals (measured and reported, not asserted): transition p50 <= 25 ms and p99 <= 100 ms at 100
and 1,000 essays, p50 <= 250 ms at 10,000; a 10,000-essay run <= 3 s; run time growth from
1,000 to 10,000 essays <= 11x; peak RSS <= 150 MB per server after 100,000 essays, without
growth across the repeated runs.

Usage: ``python -m bench.pipeline [--quick] [--worker-processes N]``; the last line printed is
one JSON object (with ``--quick`` its 10,000 and 100,000 figures are null).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.backends import Backends, backends, scratch_database
from bench.conductor import _cpu_seconds as cpu_seconds
from bench.conductor import _free_port as free_port
from bench.state import percentile
from clients import BatchClient
from conductor_server.domain.loader import parse_catalog
from generated.huleedu.batch.v1 import batch_pb2
from generated.huleedu.events.v1 import events_pb2
from launcher.workers import GROUP as WORKER_GROUP
from mesh.events import envelope
from mesh.events.admin import create_topics
from mesh.events.bus import Message, OutgoingRecord, Record
from mesh.events.consumer import Consumer
from mesh.events.kafka import KafkaBus, KafkaConfig
from mesh.events.topics import COMMAND_KINDS, EventKind, topic_name
from mesh.runtime import tune_gc
from mesh.settings import ServerSettings
from pipelines import default_definitions

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".cache" / "bench"
PIPELINE = "comprehensive"
PARTITIONS = 3
SIZES = (100, 1_000, 10_000)
MEMORY_RUNS = 10  # batches of 10,000: 100,000 essays
FLOOR_KINDS = (EventKind.BATCH_CREATED, EventKind.PHASE_SKIPPED)  # topics A and B of the floor
CREATE_TIMEOUT, RUN_TIMEOUT, START_TIMEOUT = 600.0, 600.0, 90.0
# goals: transition p50 and p99 ms by size, run seconds at 10,000, growth, peak RSS MiB
P50_GOAL = {100: 25.0, 1_000: 25.0, 10_000: 250.0}
P99_GOAL = {100: 100.0, 1_000: 100.0}
RUN_GOAL_S, GROWTH_GOAL, RSS_GOAL_MB, RSS_GROWTH = 3.0, 11.0, 150.0, 1.10


# --- backends and processes ------------------------------------------------------------------


def mesh_env(backends: Backends, database_url: str, namespace: str) -> dict[str, str]:
    """The environment of every process of the mesh: our backends, namespace and free ports."""
    conductor, conductor_metrics, batch, batch_metrics = (free_port() for _ in range(4))
    return {
        **os.environ,
        "REDIS_URL": backends.redis_url,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": backends.kafka_bootstrap,
        "KAFKA_NAMESPACE": namespace,
        "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        "HOST": "127.0.0.1",
        "AUTH_DISABLED": "true",  # what is measured is the Kafka path, not the RPCs
        "LOG_LEVEL": "WARNING",
        "CONDUCTOR_GRPC_PORT": str(conductor),
        "CONDUCTOR_METRICS_PORT": str(conductor_metrics),
        "BATCH_GRPC_PORT": str(batch),
        "BATCH_METRICS_PORT": str(batch_metrics),
        "BATCH_CONDUCTOR_ADDRESS": f"127.0.0.1:{conductor}",
        # The Kafka may be shared with other namespaces: keep the servers' groups to ours.
        "CONDUCTOR_CONSUMER_GROUP": f"{namespace}-conductor",
        "BATCH_CONSUMER_GROUP": f"{namespace}-batch",
    }


@dataclass
class Process:
    """A process of the mesh, its log file, and what ``/proc`` says about it."""

    name: str
    proc: asyncio.subprocess.Process
    log: Path

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def memory_mb(self, field: str) -> float:
        """``VmRSS`` or ``VmHWM`` in MiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"{self.name}: no {field} in /proc/{self.proc.pid}/status")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def problems(self) -> list[str]:
        """The log's lines at WARNING or above, and tracebacks."""
        marks = ("WARNING", "ERROR", "CRITICAL", "Traceback")
        text = self.log.read_text(errors="replace")
        return [line for line in text.splitlines() if any(mark in line for mark in marks)]


def _log_file(name: str) -> IO[bytes]:
    LOGS.mkdir(parents=True, exist_ok=True)
    return (LOGS / f"pipeline-{name}.log").open("wb")


async def spawn(name: str, module: str, env: Mapping[str, str]) -> Process:
    with _log_file(name) as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, cwd=ROOT, env=dict(env), stdout=log, stderr=log
        )
        return Process(name, proc, Path(log.name))


async def stop(process: Process, grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``grace`` seconds."""
    if process.proc.returncode is not None:
        return
    process.proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.proc.wait(), grace)
    except TimeoutError:
        print(f"{process.name} ignored SIGTERM for {grace:.0f} s: killed", file=sys.stderr)
        process.proc.kill()
        await process.proc.wait()


def _failed(process: Process, what: str) -> RuntimeError:
    code = process.proc.returncode
    return RuntimeError(f"{process.name} {what} (exit code {code}); its log:\n{process.tail()}")


async def wait_serving(process: Process, port: int) -> None:
    """Until the process's gRPC health says SERVING; its log tail in the error otherwise."""
    deadline = time.monotonic() + START_TIMEOUT
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and process.proc.returncode is None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                check = health.Check  # type: ignore[attr-defined]
                reply = await check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.1)
    raise _failed(process, f"did not report SERVING within {START_TIMEOUT:.0f} s")


async def _workers_holding(admin: Any, topics: set[str]) -> tuple[str, list[int]]:
    """The worker group's state and, per member holding some of ``topics``, how many."""
    [response] = await admin.describe_consumer_groups([WORKER_GROUP])
    group = response.groups[0]  # (error, id, state, protocol type, protocol, members, ...)
    held = []
    for member in group[5]:  # the assignment is a member's last field in every version
        assignment = ConsumerProtocolMemberAssignment.decode(member[-1]) if member[-1] else None
        count = sum(len(p) for t, p in assignment.assignment if t in topics) if assignment else 0
        held += [count] if count else []
    return str(group[2]), held


async def wait_workers(bootstrap: str, namespace: str, workers: Sequence[Process]) -> None:
    """Until the worker group is stable with each worker holding some of our command partitions
    and all of them held (a late join would rebalance the group during a timed run)."""
    topics = {topic_name(kind, namespace) for kind in COMMAND_KINDS.values()}
    admin: Any = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for worker in workers:
                if worker.proc.returncode is not None:
                    raise _failed(worker, "exited")
            state, held = await _workers_holding(admin, topics)
            complete = sum(held) == len(topics) * PARTITIONS
            if state == "Stable" and len(held) == len(workers) and complete:
                return
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    raise _failed(workers[0], f"and its peers were not assigned within {START_TIMEOUT:.0f} s")


@dataclass
class Mesh:
    conductor: Process
    batch: Process
    workers: list[Process]

    def cpu(self) -> dict[str, float]:
        return {
            "conductor": self.conductor.cpu(),
            "batch": self.batch.cpu(),
            "workers": sum(worker.cpu() for worker in self.workers),
        }

    def memory(self) -> dict[str, tuple[float, float]]:
        """(VmRSS, VmHWM) of each server, MiB."""
        servers = {"conductor": self.conductor, "batch": self.batch}
        return {n: (p.memory_mb("VmRSS"), p.memory_mb("VmHWM")) for n, p in servers.items()}


@asynccontextmanager
async def running_mesh(
    env: Mapping[str, str], workers: int, started: list[Process]
) -> AsyncIterator[Mesh]:
    """Both servers (each SERVING) and the workers (assigned), stopped in reverse at the end;
    every process started is appended to ``started`` (for its log, afterwards)."""
    try:
        conductor = await spawn("conductor", "conductor_server", env)
        started.append(conductor)
        await wait_serving(conductor, int(env["CONDUCTOR_GRPC_PORT"]))
        batch = await spawn("batch", "batch_server", env)
        started.append(batch)
        await wait_serving(batch, int(env["BATCH_GRPC_PORT"]))
        for number in range(workers):
            started.append(await spawn(f"workers-{number}", "launcher.workers", env))
        pool = started[2:]
        await wait_workers(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_NAMESPACE"], pool)
        yield Mesh(conductor, batch, pool)
    finally:
        for process in reversed(started):  # the workers, the BatchService, the conductor
            await stop(process)


# --- observing transitions -------------------------------------------------------------------


def dependencies(pipeline: str) -> dict[str, tuple[str, ...]]:
    """Each step of ``pipeline`` and the steps it waits for, from the shipped definitions."""
    text = default_definitions().read_text()
    catalog = parse_catalog(text, "pipelines.yaml", COMMAND_KINDS.keys())
    return {step.name: step.depends_on for step in catalog.pipeline(pipeline).steps}


def transition_name(step: str, needs: Sequence[str]) -> str:
    return f"{'+'.join(needs)} -> {step}"


@dataclass
class Timeline:
    """Per step of one batch: its last outcome's and its first command's timestamp (ms)."""

    last_outcome: dict[str, int] = field(default_factory=dict)
    first_command: dict[str, int] = field(default_factory=dict)

    def add(self, record: Record, is_outcome: bool) -> None:
        event = envelope.decode(record.value)
        if is_outcome:
            step = event.essay_step_outcome.step
            self.last_outcome[step] = max(self.last_outcome.get(step, 0), record.timestamp)
        else:
            step = event.step_command.step
            first = self.first_command.get(step, record.timestamp)
            self.first_command[step] = min(first, record.timestamp)

    def transitions(self, deps: Mapping[str, Sequence[str]]) -> dict[str, float]:
        return {
            transition_name(step, needs): float(
                self.first_command[step] - max(self.last_outcome[need] for need in needs)
            )
            for step, needs in deps.items()
            if needs
        }


class Observer:
    """Reads the outcome and command topics of a namespace without a consumer group."""

    def __init__(self, bootstrap: str, namespace: str) -> None:
        kinds = [EventKind.ESSAY_STEP_OUTCOME, *dict.fromkeys(COMMAND_KINDS.values())]
        self._outcomes = topic_name(EventKind.ESSAY_STEP_OUTCOME, namespace)
        self._tps = [
            TopicPartition(topic_name(kind, namespace), p)
            for kind in kinds
            for p in range(PARTITIONS)
        ]
        self._kafka: Any = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )

    async def __aenter__(self) -> Observer:
        await self._kafka.start()
        self._kafka.assign(self._tps)
        await self._kafka.seek_to_end(*self._tps)
        self._kafka.pause(*self._tps)  # no fetching while a run is timed
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._kafka.stop()

    async def read(self, batch_id: str) -> Timeline:
        """The records of ``batch_id`` among those written since the last read."""
        kafka, key, timeline = self._kafka, batch_id.encode(), Timeline()
        ends = await kafka.end_offsets(self._tps)
        kafka.resume(*self._tps)
        try:
            while [tp for tp in self._tps if await kafka.position(tp) < ends[tp]]:
                polled = await kafka.getmany(timeout_ms=1000, max_records=10_000)
                for records in polled.values():
                    for record in records:
                        if record.timestamp_type != 0:
                            raise RuntimeError(f"{record.topic}: not CreateTime timestamps")
                        if record.key == key:
                            timeline.add(record, record.topic == self._outcomes)
        finally:
            kafka.pause(*self._tps)
        return timeline


# --- the floor -------------------------------------------------------------------------------


class Floor:
    """Two hops over the mesh's bus: write to A, a consumer on A writes to B, B receives."""

    def __init__(self, bus: KafkaBus) -> None:
        self._bus = bus
        self._a, self._b = (topic_name(kind, bus.namespace) for kind in FLOOR_KINDS)
        self._arrivals: dict[str, asyncio.Future[float]] = {}
        self._sent = 0

    async def relay(self, messages: Sequence[Message]) -> None:
        records = [(m.record.value or b"", m.record.key, m.record.headers) for m in messages]
        await self._bus.write([OutgoingRecord(self._b, *record) for record in records])

    async def arrive(self, messages: Sequence[Message]) -> None:
        now = time.perf_counter()
        for message in messages:
            arrival = self._arrivals.get(message.envelope.batch_created.batch_id)
            if arrival is not None and not arrival.done():
                arrival.set_result(now)

    async def trip(self, within: float = 10.0) -> float:
        """Seconds from the write on A to the receipt on B of one new record."""
        self._sent += 1
        trip = f"trip-{self._sent}"
        event = envelope.build(
            events_pb2.BatchCreated(batch_id=trip), source_service="bench-floor", event_id=trip
        )
        headers = tuple(envelope.headers(event))
        record = OutgoingRecord(self._a, envelope.encode(event), trip.encode(), headers)
        arrival = self._arrivals[trip] = asyncio.get_running_loop().create_future()
        try:
            began = time.perf_counter()
            await self._bus.write([record])
            received: float = await asyncio.wait_for(arrival, within)
            return received - began
        finally:
            del self._arrivals[trip]

    async def trips(self, count: int) -> list[float]:
        return [await self.trip() for _ in range(count)]


async def _finish(consumer: Consumer, task: asyncio.Task[None]) -> None:
    await consumer.stop()
    await task


@asynccontextmanager
async def floor(bootstrap: str, namespace: str) -> AsyncIterator[Floor]:
    """The floor's bus and its two consumers, joined and warmed up."""
    space = f"{namespace}.floor"  # its topics are the registry's, under our namespace
    await create_topics(bootstrap, [topic_name(k, space) for k in FLOOR_KINDS], partitions=3)
    async with AsyncExitStack() as stack:
        config = KafkaConfig(bootstrap, namespace=space, client_id="bench-floor")
        bus = await stack.enter_async_context(KafkaBus(config))
        probe = Floor(bus)
        for kind, handler in zip(FLOOR_KINDS, (probe.relay, probe.arrive), strict=True):
            group = f"{space}.{kind.name.lower()}"
            consumer = bus.consumer(group, [kind], handler, service="bench-floor")
            await stack.enter_async_context(consumer)
            stack.push_async_callback(_finish, consumer, asyncio.create_task(consumer.run()))
        await probe.trip(within=START_TIMEOUT)  # both consumers have joined their groups
        await probe.trips(20)  # warm-up
        yield probe


# --- runs ------------------------------------------------------------------------------------


@dataclass
class Run:
    essays: int
    seconds: float
    transitions: dict[str, float]  # name -> ms
    cpu: dict[str, float]  # process -> CPU seconds during the run
    memory: dict[str, tuple[float, float]]  # server -> (VmRSS, VmHWM) MiB after the run


@dataclass
class Bench:
    mesh: Mesh
    client: BatchClient
    observer: Observer
    deps: dict[str, tuple[str, ...]]

    async def run(self, essays: int) -> Run:
        texts = [f"Essay {i}: teh cat sat on teh mat and wrote about it." for i in range(essays)]
        flags = {"prompt_attached": True}
        batch = await self.client.create_batch(texts, flags=flags, timeout=CREATE_TIMEOUT)
        cpu = self.mesh.cpu()
        started = await self.client.start_pipeline(batch.batch_id, PIPELINE)
        began = time.perf_counter()
        watch = self.client.watch_batch(batch.batch_id, started.run.run_id, RUN_TIMEOUT)
        status = [update.run.status async for update in watch][-1]
        seconds = time.perf_counter() - began
        spent = {name: used - cpu[name] for name, used in self.mesh.cpu().items()}
        if status != batch_pb2.RUN_STATUS_COMPLETED:
            name = batch_pb2.RunStatus.Name(status)
            raise RuntimeError(f"batch {batch.batch_id}: the run ended {name}")
        timeline = await self.observer.read(batch.batch_id)
        return Run(essays, seconds, timeline.transitions(self.deps), spent, self.mesh.memory())

    async def runs(self, essays: int, count: int) -> list[Run]:
        done = []
        for number in range(count):
            done.append(run := await self.run(essays))
            shown = ", ".join(f"{ms:.0f}" for ms in run.transitions.values())
            print(
                f"{essays:>6,} essays, run {number + 1}/{count}: {run.seconds:.2f} s, "
                f"transitions {shown} ms",
                file=sys.stderr,
            )
        return done


@dataclass
class Results:
    runs: dict[int, list[Run]] = field(default_factory=dict)
    floor: list[float] = field(default_factory=list)  # seconds
    processes: list[Process] = field(default_factory=list)


async def measure(
    found: Backends, sizes: Sequence[int], runs: int, trips: int, workers: int
) -> Results:
    results, namespace = Results(), f"bench{secrets.token_hex(4)}"
    async with scratch_database(found.database_url) as database:
        env = mesh_env(found, database, namespace)
        bootstrap = found.kafka_bootstrap
        async with (
            running_mesh(env, workers, results.processes) as mesh,
            Observer(bootstrap, namespace) as observer,
            floor(bootstrap, namespace) as probe,
            BatchClient(f"127.0.0.1:{env['BATCH_GRPC_PORT']}") as client,
        ):
            bench = Bench(mesh, client, observer, dependencies(PIPELINE))
            await bench.run(100)  # warm-up
            for essays in sizes:
                results.floor += await probe.trips(trips // len(sizes))
                results.runs[essays] = await bench.runs(essays, runs)
    return results


# --- report ----------------------------------------------------------------------------------


def _ms(values: Sequence[float], q: float) -> float:
    return round(percentile(values, q), 2)


def _verdict(value: float | None, goal: float) -> str:
    return "n/a" if value is None else ("met" if value <= goal else "MISSED")


def _latencies(runs: Sequence[Run], name: str | None = None) -> list[float]:
    return [ms for run in runs for n, ms in run.transitions.items() if name in (None, n)]


def _median_s(results: Results, essays: int) -> float | None:
    runs = results.runs.get(essays)
    return round(statistics.median(r.seconds for r in runs), 3) if runs else None


def cpu_per_essay_step(runs: Sequence[Run], steps: int) -> dict[str, float]:
    work = sum(run.essays for run in runs) * steps
    return {name: round(sum(r.cpu[name] for r in runs) / work * 1e6, 1) for name in runs[0].cpu}


def transition_table(results: Results, names: Sequence[str]) -> list[str]:
    short = [name.split(" -> ")[1] for name in names]
    lines = [
        "Step transitions: first command of a step - last outcome of its dependencies (ms)",
        f"{'essays':>7} {'runs':>5} {'n':>5} {'p50':>7} {'p99':>7} {'max':>7}  "
        + " ".join(f"{'p50 ' + s:>16}" for s in short)
        + "  goal p50/p99   met",
    ]
    for essays, runs in results.runs.items():
        values = _latencies(runs)
        p50, p99 = _ms(values, 0.5), _ms(values, 0.99)
        per = " ".join(f"{_ms(_latencies(runs, n), 0.5):>16.0f}" for n in names)
        p99_goal = P99_GOAL.get(essays)
        goal = f"{P50_GOAL[essays]:.0f}/{p99_goal:.0f}" if p99_goal else f"{P50_GOAL[essays]:.0f}/-"
        met = _verdict(p50, P50_GOAL[essays])
        met += f", {_verdict(p99, p99_goal)}" if p99_goal else ""
        lines.append(
            f"{essays:>7,} {len(runs):>5} {len(values):>5} {p50:>7.1f} {p99:>7.1f} "
            f"{max(values):>7.0f}  {per}  {goal:>12}   {met}"
        )
    return lines


def run_table(results: Results, steps: int) -> list[str]:
    lines = [
        "Whole runs: StartPipeline returned -> WatchBatch reports the run finished",
        f"{'essays':>7} {'median s':>9} {'min s':>7} {'max s':>7}   CPU us/essay-step: "
        f"{'conductor':>9} {'batch':>7} {'workers':>7}",
    ]
    for essays, runs in results.runs.items():
        seconds = [run.seconds for run in runs]
        cpu = cpu_per_essay_step(runs, steps)
        lines.append(
            f"{essays:>7,} {statistics.median(seconds):>9.3f} {min(seconds):>7.3f} "
            f"{max(seconds):>7.3f}   {'':>19}{cpu['conductor']:>9.1f} {cpu['batch']:>7.1f} "
            f"{cpu['workers']:>7.1f}"
        )
    return lines


def memory_table(runs: Sequence[Run]) -> list[str]:
    lines = [
        "Memory of the servers after each 10,000-essay run (MiB)",
        f"{'run':>4} {'conductor RSS':>14} {'batch RSS':>10} {'conductor peak':>15} "
        f"{'batch peak':>11}",
    ]
    for number, run in enumerate(runs, 1):
        (c_rss, c_peak), (b_rss, b_peak) = run.memory["conductor"], run.memory["batch"]
        lines.append(f"{number:>4} {c_rss:>14.1f} {b_rss:>10.1f} {c_peak:>15.1f} {b_peak:>11.1f}")
    return lines


def memory_figures(runs: Sequence[Run]) -> dict[str, Any]:
    if len(runs) < MEMORY_RUNS:
        return {"rss_mb_max_10000": None, "rss_mb_max_100000": None}
    first, tenth = runs[0].memory, runs[MEMORY_RUNS - 1].memory
    peak = {server: round(tenth[server][1], 1) for server in tenth}
    rss = {server: [round(r.memory[server][0], 1) for r in runs[:MEMORY_RUNS]] for server in first}
    return {
        "rss_mb_max_10000": {server: round(first[server][1], 1) for server in first},
        "rss_mb_max_100000": max(peak.values()),
        "rss_mb_max_100000_by_server": peak,
        "rss_mb_after_each_of_ten_runs": rss,
        "rss_grew": {s: values[-1] > values[0] * RSS_GROWTH for s, values in rss.items()},
        "rss_mb_max_end": {server: round(runs[-1].memory[server][1], 1) for server in first},
    }


def figures(results: Results, names: Sequence[str], steps: int, workers: int) -> dict[str, Any]:
    floor = [seconds * 1000 for seconds in results.floor]
    figures: dict[str, Any] = {"bench": "pipeline"}
    at = {essays: _latencies(runs) for essays, runs in results.runs.items()}
    ours, baseline = _ms(at[1_000], 0.5), _ms(floor, 0.5)
    figures |= {
        "ours": ours,
        "baseline": baseline,
        "unit": "ms",
        "ratio": round(ours / baseline, 2),
    }
    for essays in SIZES:
        values = at.get(essays)
        figures[f"transition_p50_ms_{essays}"] = _ms(values, 0.5) if values else None
        figures[f"transition_p99_ms_{essays}"] = _ms(values, 0.99) if values else None
    run_1000, run_10000 = _median_s(results, 1_000), _median_s(results, 10_000)
    big = results.runs.get(10_000, [])
    figures |= {
        "floor_p50_ms": baseline,
        "floor_p99_ms": _ms(floor, 0.99),
        "run_s_1000": run_1000,
        "run_s_10000": run_10000,
        "runs_s_10000": [round(run.seconds, 3) for run in big] or None,
        "growth_1000_to_10000": round(run_10000 / run_1000, 2) if run_10000 and run_1000 else None,
        "cpu_us_per_essay_step": cpu_per_essay_step(big, steps) if big else None,
        "cpu_us_per_essay_step_1000": cpu_per_essay_step(results.runs[1_000], steps),
        **memory_figures(big),
        "transition_p50_ms_by_step_1000": {
            name: _ms(_latencies(results.runs[1_000], name), 0.5) for name in names
        },
        "runs": {str(essays): len(runs) for essays, runs in results.runs.items()},
        "transitions": {str(essays): len(values) for essays, values in at.items()},
        "floor_trips": len(floor),
        "worker_processes": workers,
        "percentiles": "nearest rank",
    }
    return figures


def summary_lines(figures: Mapping[str, Any]) -> list[str]:
    growth, run_10000, peak = (
        figures["growth_1000_to_10000"],
        figures["run_s_10000"],
        figures["rss_mb_max_100000"],
    )
    lines = [
        f"Floor (mesh bus, Kafka two hops, {figures['floor_trips']} trips): "
        f"p50 {figures['floor_p50_ms']:.2f} ms, p99 {figures['floor_p99_ms']:.2f} ms; "
        f"ratio transition p50 at 1,000 / floor p50 = {figures['ratio']:.2f}",
        f"Run at 10,000: median {run_10000} s (goal <= {RUN_GOAL_S:.0f} s: "
        f"{_verdict(run_10000, RUN_GOAL_S)}); growth 1,000 -> 10,000: {growth}x "
        f"(goal <= {GROWTH_GOAL:.0f}x: {_verdict(growth, GROWTH_GOAL)})",
    ]
    if figures["runs_s_10000"]:
        lines.append(f"Each run at 10,000 (s): {figures['runs_s_10000']}")
    grew = figures.get("rss_grew")
    lines.append(
        f"Peak RSS after 100,000 essays: {peak} MiB (goal <= {RSS_GOAL_MB:.0f}: "
        f"{_verdict(peak, RSS_GOAL_MB)}); RSS grew over ten runs (> {RSS_GROWTH - 1:.0%}): "
        f"{grew if grew is not None else 'n/a'}"
    )
    return lines


def log_lines(processes: Sequence[Process]) -> list[str]:
    """What the mesh's logs say at WARNING or above (the first lines of each)."""
    lines = []
    for process in processes:
        found = process.problems()
        lines.append(f"{process.log.relative_to(ROOT)}: {len(found)} lines at WARNING or above")
        lines += [f"    {line[:160]}" for line in found[:5]]
    return lines


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 runs at 100 and 1,000 essays")
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--runs", type=int, help="runs at each size (default 30, --quick 5)")
    args = parser.parse_args(argv)
    sizes = SIZES[:2] if args.quick else SIZES
    runs = args.runs or (5 if args.quick else 30)
    trips = 200 if args.quick else 300
    tune_gc(ServerSettings().gc_threshold)  # the servers' setting, for the floor's process
    import uvloop

    with backends() as found:
        results = uvloop.run(measure(found, sizes, runs, trips, args.worker_processes))
    deps = dependencies(PIPELINE)
    names = [transition_name(step, needs) for step, needs in deps.items() if needs]
    result = figures(results, names, len(deps), args.worker_processes)
    lines = [
        *transition_table(results, names),
        "",
        *run_table(results, len(deps)),
        "",
        *summary_lines(result),
    ]
    if 10_000 in results.runs:
        lines += ["", *memory_table(results.runs[10_000])]
    print("\n".join([*lines, "", *log_lines(results.processes)]))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
