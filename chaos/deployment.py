"""A deployment of the mesh for one scenario: its namespace, its database, its server processes.

``Server`` is one server process that a scenario can kill, terminate and start again on the same
ports and environment (its log grows across lives). ``deployment`` makes a fresh database on the
devstack's PostgreSQL, starts the conductors, then the BatchServices (each pointed at every
conductor, first its own), and at the end terminates what still runs and drops the database.
The processes come from ``bench.harness.processes``, as the pipeline benchmark runs them.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.backends import Backends, create_database, drop_database
from bench.harness.ports import free_port
from bench.harness.processes import Process, mesh_env, spawn, wait_serving

CONDUCTOR, BATCH = "conductor_server", "batch_server"
PREFIX = {CONDUCTOR: "CONDUCTOR_", BATCH: "BATCH_"}  # of each server's own variables
EXIT_TIMEOUT = 60.0  # SIGTERM to exit: drain, grace and closing the backends


@dataclass
class Server:
    """One server process; ``started_at`` is the ``time.monotonic()`` of its latest start."""

    name: str
    module: str
    env: dict[str, str]
    port: int
    log: Path
    process: Process | None = None
    started_at: float = 0.0
    exits: list[int] = field(default_factory=list)  # exit codes of its previous lives

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.proc.returncode is None

    async def start(self, serving: bool = True) -> None:
        """Start it; with ``serving``, return once its gRPC health says SERVING."""
        self.started_at = time.monotonic()
        self.process = await spawn(self.name, self.module, self.env, log=self.log)
        if serving:
            await wait_serving(self.process, self.port)

    async def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.process is not None and self.running:
            self.process.proc.kill()
            self.exits.append(await self.process.proc.wait())

    async def terminate(self, within: float = EXIT_TIMEOUT) -> int:
        """SIGTERM; its exit code (SIGKILL, and -9, if it ignores SIGTERM ``within`` seconds)."""
        assert self.process is not None
        proc = self.process.proc
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), within)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        code = int(proc.returncode or 0)
        self.exits.append(code)
        return code

    async def wait_exit(self, within: float) -> int | None:
        """Its exit code once it exits on its own within ``within`` seconds, else None."""
        assert self.process is not None
        try:
            return await asyncio.wait_for(self.process.proc.wait(), within)
        except TimeoutError:
            return None

    def twin(self, name: str, **env: str) -> Server:
        """A server like this one on ports of its own, with ``env`` changed; not started."""
        prefix = PREFIX[self.module]
        port, metrics = free_port(), free_port()
        changed = {
            **self.env,
            **env,
            f"{prefix}GRPC_PORT": str(port),
            f"{prefix}METRICS_PORT": str(metrics),
        }
        return Server(name, self.module, changed, port, self.log.with_name(f"{name}.log"))

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Deployment:
    namespace: str
    database_url: str
    backends: Backends
    conductors: list[Server]
    batches: list[Server]

    @property
    def servers(self) -> list[Server]:
        return [*self.conductors, *self.batches]

    def env(self) -> dict[str, str]:
        """The environment of its first conductor (the backends and namespace of them all)."""
        return dict(self.conductors[0].env)


def _servers(
    backends: Backends,
    database: str,
    namespace: str,
    logs: Path,
    count: tuple[int, int],
    extra: Mapping[str, str],
) -> tuple[list[Server], list[Server]]:
    envs = [{**mesh_env(backends, database, namespace), "LOG_LEVEL": "INFO", **extra}]
    envs += [{**envs[0], **_ports(backends, database, namespace)} for _ in range(max(count) - 1)]
    conductors = [
        Server(
            f"conductor-{i + 1}",
            CONDUCTOR,
            env,
            int(env["CONDUCTOR_GRPC_PORT"]),
            logs / f"{namespace}-conductor-{i + 1}.log",
        )
        for i, env in enumerate(envs[: count[0]])
    ]
    addresses = [c.address for c in conductors]
    batches = []
    for i, env in enumerate(envs[: count[1]]):
        mine = i % len(addresses)  # its own conductor first, the others after it
        others = addresses[mine:] + addresses[:mine]
        env = {**env, "BATCH_CONDUCTOR_ADDRESS": _target(others)}
        log = logs / f"{namespace}-batch-{i + 1}.log"
        batches.append(Server(f"batch-{i + 1}", BATCH, env, int(env["BATCH_GRPC_PORT"]), log))
    return conductors, batches


def _ports(backends: Backends, database: str, namespace: str) -> dict[str, str]:
    fresh = mesh_env(backends, database, namespace)
    return {
        name: fresh[name]
        for name in (
            "CONDUCTOR_GRPC_PORT",
            "CONDUCTOR_METRICS_PORT",
            "BATCH_GRPC_PORT",
            "BATCH_METRICS_PORT",
        )
    }


def _target(addresses: list[str]) -> str:
    """A gRPC target for one address, or for several (tried in order: ``ipv4:a,b``)."""
    return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)


@asynccontextmanager
async def deployment(
    backends: Backends,
    namespace: str,
    logs: Path,
    *,
    conductors: int = 1,
    batches: int = 1,
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[Deployment]:
    """A fresh database and the servers on it, SERVING; stopped and dropped afterwards."""
    database = await create_database(backends.database_url)
    count = (conductors, batches)
    made = _servers(backends, database, namespace, logs, count, extra_env or {})
    mesh = Deployment(namespace, database, backends, *made)
    try:
        for server in mesh.servers:  # conductors first: a BatchService registers batches there
            await server.start()
        yield mesh
    finally:
        for server in reversed(mesh.servers):
            if server.running:
                await server.terminate()
        await drop_database(backends.database_url, database)
