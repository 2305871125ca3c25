"""End-to-end fixtures: the servers as real processes against the real backends.

``ServerProcess`` starts ``python -m <module>`` on free ports with the test's isolated backends
(a fresh database, a unique Kafka namespace), waits until gRPC health says SERVING, and on exit
sends SIGTERM and checks the process exits 0. ``launched`` is ``make run`` (embedded mode, demo
workers) on free ports, for the documents' examples. ``sdk_mesh`` runs both servers and the demo
workers (``python -m launcher.workers``) as processes, for the SDKs of other languages.
``grpcurl`` is installed with ``go install`` into the repository's cache the first time it is
needed; Go keeps its modules and builds under ``.cache/go`` as the Makefile has it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness.ports import free_port
from mesh.events.bus import BatchHandler
from mesh.events.consumer import Consumer, ConsumerConfig
from mesh.events.producer import Producer
from mesh.events.topics import COMMAND_KINDS
from tests.conftest import Backends
from tests.support.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
GRPCURL_VERSION = "v1.9.3"
GOBIN = ROOT / ".cache" / "bin"
GO = shutil.which("go") or "/usr/local/go/bin/go"
BACKEND_VARIABLES = ("REDIS_URL", "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
W = TypeVar("W", bound=BatchHandler)


def go_env() -> dict[str, str]:
    """The environment for ``go``: module and build caches under .cache, as the Makefile sets."""
    cache = ROOT / ".cache" / "go"
    return {
        **os.environ,
        "GOMODCACHE": os.environ.get("GOMODCACHE", str(cache / "mod")),
        "GOCACHE": os.environ.get("GOCACHE", str(cache / "build")),
        "GOFLAGS": os.environ.get("GOFLAGS", "-modcacherw -buildvcs=false"),
    }


class ServerProcess:
    """One server as a child process; ``address`` is its gRPC ``host:port``. ``credentials``:
    how its health is checked when it serves TLS."""

    def __init__(
        self,
        module: str,
        env: Mapping[str, str],
        prefix: str,
        log_path: Path,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.module = module
        self.credentials = credentials
        self.port = free_port()
        self.metrics_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            **env,
            f"{prefix}HOST": "127.0.0.1",
            f"{prefix}GRPC_PORT": str(self.port),
            f"{prefix}METRICS_PORT": str(self.metrics_port),
            f"{prefix}SHUTDOWN_GRACE_SECONDS": "10",
            # no client here routes by health: the drain window would only slow every stop
            f"{prefix}DRAIN_SECONDS": env.get(f"{prefix}DRAIN_SECONDS", "0"),
        }
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, within: float = 60.0) -> None:
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.module, cwd=ROOT, env=self.env, stdout=log, stderr=log
        )
        log.close()
        try:
            await self.wait_serving(within)
        except BaseException:
            await self.kill()
            raise

    def channel(self) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.address)
        return grpc.aio.secure_channel(self.address, self.credentials)

    async def health(self, service: str = "") -> int:
        async with self.channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=service)
            response = await stub.Check(request, timeout=2)  # type: ignore[attr-defined]
            return int(response.status)

    async def wait_serving(self, within: float) -> None:
        async def serving() -> bool:
            assert self.process is not None
            assert self.process.returncode is None, (
                f"{self.module} exited {self.process.returncode}"
            )
            return await self.health() == health_pb2.HealthCheckResponse.SERVING

        try:
            await eventually(
                serving, within, (grpc.aio.AioRpcError,), what=f"{self.module} to be SERVING"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log:\n{self.logs()}") from exc

    async def terminate(self, within: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), within)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
                raise AssertionError(f"{self.module} ignored SIGTERM for {within}s") from None
        return int(self.process.returncode or 0)

    async def kill(self) -> None:
        """SIGKILL if still running (cleanup after a failed test); idempotent."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


@asynccontextmanager
async def serving(*servers: ServerProcess) -> AsyncIterator[None]:
    """Start ``servers`` in order; when the block ends, SIGTERM them in reverse order, and each
    must exit 0 (its log otherwise). A failure kills what is left."""
    try:
        for server in servers:
            await server.start()
        yield
        for server in reversed(servers):
            assert await server.terminate() == 0, server.logs()
    finally:
        for server in reversed(servers):
            await server.kill()


def backend_env(backends: Backends, database_url: str, namespace: str) -> dict[str, str]:
    return {
        "REDIS_URL": backends.redis_url,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": backends.kafka_bootstrap,
        "KAFKA_NAMESPACE": namespace,
        "KAFKA_TOPIC_PARTITIONS": "2",
        "USE_UVLOOP": "true",
        "LOG_LEVEL": "INFO",
        # The trust boundary has its own tier (tests/security); these test the rest.
        "AUTH_DISABLED": "true",
        "REFLECTION": "true",
    }


def launch(
    command: list[str], cwd: Path, log_path: Path, extra: dict[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """Run ``command`` (the launcher) on free ports, embedded mode, until the test ends."""
    ports = {name: str(free_port()) for name in ("batch", "conductor", "bm", "cm")}
    env = {k: v for k, v in os.environ.items() if k not in BACKEND_VARIABLES}
    env = {k: v for k, v in env.items() if not k.startswith("HULEEDU_")}
    env |= {
        "BATCH_GRPC_PORT": ports["batch"],
        "BATCH_METRICS_PORT": ports["bm"],
        "CONDUCTOR_GRPC_PORT": ports["conductor"],
        "CONDUCTOR_METRICS_PORT": ports["cm"],
        "HOST": "127.0.0.1",
        **(extra or {}),
    }
    log = log_path.open("w+")
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )

    def serving() -> bool:
        if "Press Ctrl-C to stop." in log_path.read_text():
            return True
        assert process.poll() is None, log_path.read_text()
        return False

    try:
        # a synchronous fixture: the suite's one polling loop runs on an event loop of its own
        asyncio.run(eventually(serving, 10, what="make run to be serving"))
        yield {
            "BATCH_ADDRESS": f"127.0.0.1:{ports['batch']}",
            "CONDUCTOR_ADDRESS": f"127.0.0.1:{ports['conductor']}",
            "log": str(log_path),
        }
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(30) == 0, log_path.read_text()
        finally:
            log.close()


@asynccontextmanager
async def serving_with_workers(
    conductor: ServerProcess,
    batch: ServerProcess,
    backends: Backends,
    namespace: str,
    workers_for: Callable[[Producer], W],
) -> AsyncIterator[W]:
    """Start ``conductor`` and ``batch``, then consume every step's commands with the test's own
    workers (``workers_for(producer)``, answering through ``producer``) until the block ends;
    then each server must exit 0 on SIGTERM. A failure kills what is left."""
    config = ConsumerConfig(
        backends.kafka_bootstrap, f"{namespace}-workers", "e2e-workers", namespace=namespace
    )
    kinds = list(dict.fromkeys(COMMAND_KINDS.values()))
    async with (
        serving(conductor, batch),
        Producer(backends.kafka_bootstrap, namespace=namespace) as producer,
    ):
        workers = workers_for(producer)
        async with Consumer(
            config, kinds, workers, dead_letters=producer, accept={"step_command"}
        ) as consumer:
            task = asyncio.create_task(consumer.run())
            yield workers
            await consumer.stop()
            await task


@pytest.fixture
def launched(tmp_path: Path) -> Iterator[dict[str, str]]:
    """``python -m launcher`` (what ``make run`` runs) on free ports, embedded mode."""
    command = [sys.executable, "-m", "launcher", "--worker-delay", "0.2"]
    yield from launch(command, ROOT, tmp_path / "launcher.log")


@pytest.fixture
async def conductor_process(
    backends: Backends, database_url: str, kafka_namespace: str, tmp_path: Path
) -> AsyncIterator[ServerProcess]:
    server = ServerProcess(
        "conductor_server",
        backend_env(backends, database_url, kafka_namespace),
        "CONDUCTOR_",
        tmp_path / "conductor.log",
    )
    try:
        await server.start()
        yield server
        await server.terminate()
    finally:
        await server.kill()


@pytest.fixture
async def sdk_mesh(
    backends: Backends, database_url: str, kafka_namespace: str, tmp_path: Path
) -> AsyncIterator[dict[str, str]]:
    """Both servers and the demo workers as processes on real backends; their addresses as the
    environment the SDK tests read (HULEEDU_BATCH_ADDRESS, HULEEDU_CONDUCTOR_ADDRESS)."""
    env = backend_env(backends, database_url, kafka_namespace)
    conductor = ServerProcess("conductor_server", env, "CONDUCTOR_", tmp_path / "conductor.log")
    batch = ServerProcess(
        "batch_server",
        {**env, "BATCH_CONDUCTOR_ADDRESS": conductor.address},
        "BATCH_",
        tmp_path / "batch.log",
    )
    workers_log = (tmp_path / "workers.log").open("ab")
    workers = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "launcher.workers",
        "--delay",
        "0.3",  # a command takes a moment, so a test can cancel a run while it runs
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=workers_log,
        stderr=workers_log,
    )
    workers_log.close()
    try:
        async with serving(conductor, batch):
            yield {
                "HULEEDU_BATCH_ADDRESS": batch.address,
                "HULEEDU_CONDUCTOR_ADDRESS": conductor.address,
            }
            workers.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(workers.wait(), 45)
            except TimeoutError:
                code = None
            log = (tmp_path / "workers.log").read_text(errors="replace")[-4000:]
            assert code == 0, f"demo workers ended with {code} after SIGTERM:\n{log}"
    finally:
        if workers.returncode is None:
            workers.kill()
            await workers.wait()


@pytest.fixture(scope="session")
def grpcurl() -> str:
    """The grpcurl binary, installed with ``go install`` on first use."""
    found = shutil.which("grpcurl") or (
        str(GOBIN / "grpcurl") if (GOBIN / "grpcurl").exists() else None
    )
    if found:
        return found
    subprocess.run(
        [GO, "install", f"github.com/fullstorydev/grpcurl/cmd/grpcurl@{GRPCURL_VERSION}"],
        env={**go_env(), "GOBIN": str(GOBIN)},
        check=True,
        timeout=900,
    )
    return str(GOBIN / "grpcurl")


def run_grpcurl(binary: str, *args: str, data: Any = None) -> Any:
    """Run grpcurl; parse its JSON output (None for empty output). Raises on failure."""
    command = [binary, "-plaintext", "-format-error"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise AssertionError(f"grpcurl {' '.join(args)} failed: {result.stdout}{result.stderr}")
    out = result.stdout.strip()
    return json.loads(out) if out.startswith("{") else out
