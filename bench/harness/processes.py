"""The mesh as a user runs it: both servers and the demo workers, each its own process (used by
``bench/pipeline.py`` and by ``chaos``, which restarts and kills them).

``running_mesh`` starts the PipelineConductor, waits for its gRPC health to say SERVING, does the
same for the BatchService, then starts the workers and waits until their consumer group is
stable with every command partition of the namespace held; at the end it stops them in reverse
order (SIGTERM, then SIGKILL after a grace period). Each process logs to
``.cache/bench/pipeline-<name>.log``; a process that fails to start raises with its log's tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness.backends import Backends
from bench.harness.ports import free_port
from launcher.workers import GROUP as WORKER_GROUP
from mesh.events.topics import COMMAND_KINDS, topic_name, topic_name_prefix

ROOT = Path(__file__).resolve().parent.parent.parent
LOGS = ROOT / ".cache" / "bench"
PARTITIONS = 3  # of every topic the mesh creates
START_TIMEOUT = 90.0  # seconds a server has to turn SERVING, the workers to be assigned
STOP_GRACE = 30.0


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
    }


@dataclass
class Process:
    """A process of the mesh, its log file, and what ``/proc`` says about it."""

    name: str
    proc: asyncio.subprocess.Process
    log: Path

    def cpu(self) -> float:
        """User plus system CPU seconds so far."""
        return cpu_seconds(self.proc.pid)

    def memory_mb(self, field: str) -> float:
        """``VmRSS`` or ``VmHWM`` (the peak RSS) in MiB."""
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


async def spawn(
    name: str,
    module: str,
    env: Mapping[str, str],
    args: Sequence[str] = (),
    bench: str = "pipeline",
    log: Path | None = None,
) -> Process:
    """``python -m module *args`` from the repository's root, its output appended to ``log``
    (by default ``.cache/bench/<bench>-<name>.log``, emptied first)."""
    if log is None:
        log = LOGS / f"{bench}-{name}.log"
        log.unlink(missing_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args, cwd=ROOT, env=dict(env), stdout=out, stderr=out
        )
    return Process(name, proc, log)


async def stop(process: Process) -> None:
    """SIGTERM, then SIGKILL if it still runs after ``STOP_GRACE`` seconds."""
    if process.proc.returncode is not None:
        return
    process.proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.proc.wait(), STOP_GRACE)
    except TimeoutError:
        print(f"{process.name} ignored SIGTERM for {STOP_GRACE:.0f} s: killed", file=sys.stderr)
        process.proc.kill()
        await process.proc.wait()


def _failed(process: Process, what: str) -> RuntimeError:
    code = process.proc.returncode
    return RuntimeError(f"{process.name} {what} (exit code {code}); its log:\n{process.tail()}")


async def wait_serving(process: Process, port: int) -> None:
    """Until the process's gRPC health says SERVING."""
    deadline = time.monotonic() + START_TIMEOUT
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = health.Check  # type: ignore[attr-defined]
        while time.monotonic() < deadline and process.proc.returncode is None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.1)
    raise _failed(process, f"did not report SERVING within {START_TIMEOUT:.0f} s")


async def group_holdings(admin: Any, group_id: str, topics: set[str]) -> tuple[str, list[int]]:
    """A consumer group's state and, per member holding some of ``topics``, how many of their
    partitions (``admin``: an ``AIOKafkaAdminClient``)."""
    [response] = await admin.describe_consumer_groups([group_id])
    group = response.groups[0]  # (error, id, state, protocol type, protocol, members, ...)
    held = []
    for member in group[5]:  # a member's assignment is its last field in every version
        assignment = ConsumerProtocolMemberAssignment.decode(member[-1]) if member[-1] else None
        count = sum(len(p) for t, p in assignment.assignment if t in topics) if assignment else 0
        held += [count] if count else []
    return str(group[2]), held


async def wait_workers(bootstrap: str, namespace: str, workers: Sequence[Process]) -> None:
    """Until the worker group is stable, each worker holding some of our command partitions and
    all of them held: a late join would rebalance the group during a timed run."""
    topics = {topic_name(kind, namespace) for kind in COMMAND_KINDS.values()}
    group_id = topic_name_prefix(namespace) + WORKER_GROUP  # groups carry the namespace too
    admin: Any = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for worker in workers:
                if worker.proc.returncode is not None:
                    raise _failed(worker, "exited")
            state, held = await group_holdings(admin, group_id, topics)
            complete = sum(held) == len(topics) * PARTITIONS
            if state == "Stable" and len(held) == len(workers) and complete:
                return
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    raise _failed(workers[0], f"and its peers were not all assigned within {START_TIMEOUT:.0f} s")


@dataclass
class Mesh:
    conductor: Process
    batch: Process
    workers: list[Process]

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each server and of the workers together."""
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
    """The servers and ``workers`` worker processes, ready; every process started is appended
    to ``started`` (its log is read after the mesh is stopped)."""
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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
