"""The trust boundary's costs: health checks under 1,000 open streams of one principal, and
ResolvePipeline with authentication and rate limiting against the same server without them.

**Health under streams.** Both servers run as a user runs them (``python -m conductor_server``,
``python -m batch_server``, ``LOG_LEVEL=WARNING``, logs in ``.cache/bench/security-*.log``) on
the real backends of the environment (``REDIS_URL``, ``DATABASE_URL``,
``KAFKA_BOOTSTRAP_SERVERS``; else a private devstack), a fresh database and Kafka namespace, with
API keys (``AUTH_KEYS_FILE``) and ``MAX_STREAMS_PER_PRINCIPAL=1000`` so that one principal may
hold them all (its key has no rate limit for ``batches:read``, so it opens them at once). A
batch is created and ``spellcheck`` started with no worker, so its run stays
RUNNING. A holder process (``--hold``) opens 1,000 ``WatchBatch`` streams of that run on one
channel with one key and keeps them open, each having received its first update. This process
then sends ``grpc.health.v1.Health/Check`` (overall), one at a time, 5 ms apart, 1,000 checks
(``--quick``: 300) with a 1 s deadline, over a channel of its own: latency p50/p99/max and
failures, and the share of a core the BatchService used meanwhile (each open stream re-reads
its run every ``WATCH_POLL_SECONDS``). The same checks on the same server before the streams
open are its idle figures.
Goal: p99 at most 20 ms and no failure with the streams open.

**ResolvePipeline.** The conductor as ``bench/conductor.py`` runs it (its own process, embedded
mode, uvloop, the servers' GC setting), loaded the same way: one client process holding 32 calls
in flight over one channel for ``--seconds`` (``dry_run`` resolutions of ``comprehensive``).
*off*: no key source (embedded on loopback: no authentication, no limits). *on*: a key file, the
client sending its key on every call, and ``RATE_LIMITS`` high enough that no call is refused,
so every call is identified (SHA-256, dict lookup, ``hmac.compare_digest``), checked for its
scope and charged to its token bucket. Rounds alternate the two; each one's figure is its best
round (other load on the shared machine only slows a round down). ``ratio`` = on / off; goal at
least 0.95.

Usage: ``python -m bench.security [--quick]``; the last line is JSON. The benchmark measures,
it does not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.conductor import REQUEST, Round
from bench.harness.backends import backends, scratch_database
from bench.harness.ports import free_port
from bench.harness.processes import (
    LOGS,
    Process,
    cpu_seconds,
    spawn,
    stop,
    wait_serving,
)
from clients import BatchClient, Credentials
from generated.huleedu.batch.v1 import batch_pb2, batch_pb2_grpc
from generated.huleedu.conductor.v1 import conductor_pb2 as pb
from generated.huleedu.conductor.v1 import conductor_pb2_grpc
from mesh.security.keys import SCOPES, key_digest, new_key

STREAMS = 1000
CONCURRENCY = 32
HEALTH_GOAL_MS = 20.0
NO_LIMIT = ",".join(f"{scope}=1000000/1000000" for scope in sorted(SCOPES))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_keys(folder: Path) -> tuple[Path, str, str]:
    """A key file with the BatchService's key and an all-scopes client key."""
    service, client = new_key(), new_key()
    path = folder / "keys.jsonl"
    lines = [
        {"principal": "batch-service", "sha256": key_digest(service), "scopes": sorted(SCOPES)},
        {
            "principal": "bench",
            "sha256": key_digest(client),
            "scopes": sorted(SCOPES),
            "rate_limits": {"batches:read": "0"},  # opens its 1,000 streams at once
        },
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    path.chmod(0o600)
    return path, service, client


# --- health under streams --------------------------------------------------------------------


async def health_round(address: str, checks: int) -> tuple[list[float], int]:
    """Latencies (ms) of ``checks`` health checks one at a time, and how many failed."""
    latencies: list[float] = []
    failures = 0
    async with grpc.aio.insecure_channel(address) as channel:
        check: Any = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]
        for _ in range(checks):
            started = time.perf_counter()
            try:
                reply = await check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    failures += 1
            except grpc.aio.AioRpcError:
                failures += 1
            latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.005)
    return latencies, failures


@contextlib.asynccontextmanager
async def mesh(folder: Path) -> AsyncIterator[tuple[str, str, Process]]:
    """Both servers on the real backends with API keys: the BatchService's address, the
    client's key, the BatchService's process."""
    keys, service_key, client_key = write_keys(folder)
    with backends() as stack:
        async with scratch_database(stack.database_url) as database:
            namespace = f"bsec{uuid.uuid4().hex[:8]}"
            conductor_port, batch_port = free_port(), free_port()
            env = {
                **os.environ,
                "REDIS_URL": stack.redis_url,
                "DATABASE_URL": database,
                "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
                "KAFKA_NAMESPACE": namespace,
                "HOST": "127.0.0.1",
                "LOG_LEVEL": "WARNING",
                "AUTH_KEYS_FILE": str(keys),
                "MAX_STREAMS_PER_PRINCIPAL": str(STREAMS),
                "CONDUCTOR_GRPC_PORT": str(conductor_port),
                "CONDUCTOR_METRICS_PORT": "-1",
                "BATCH_GRPC_PORT": str(batch_port),
                "BATCH_METRICS_PORT": "-1",
                "BATCH_CONDUCTOR_ADDRESS": f"127.0.0.1:{conductor_port}",
                "CONDUCTOR_API_KEY": service_key,
                "CONDUCTOR_CONSUMER_GROUP": f"{namespace}-conductor",
                "BATCH_CONSUMER_GROUP": f"{namespace}-batch",
            }
            conductor = await spawn("conductor", "conductor_server", env, bench="security")
            batch = await spawn("batch", "batch_server", env, bench="security")
            try:
                await wait_serving(conductor, conductor_port)
                await wait_serving(batch, batch_port)
                yield f"127.0.0.1:{batch_port}", client_key, batch
            finally:
                await stop(batch)
                await stop(conductor)


async def streams_and_health(checks: int) -> dict[str, Any]:
    folder = LOGS / f"security-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    async with mesh(folder) as (address, key, server):
        credentials = Credentials(api_key=key)
        async with BatchClient(address, credentials=credentials) as client:
            batch = await client.create_batch(["An essay."], flags={"prompt_attached": True})
            await client.start_pipeline(batch.batch_id, "spellcheck")
        idle, idle_failures, idle_cpu = await measured(server, address, checks)
        holder = await spawn(
            "holder",
            "bench.security",
            {**os.environ, "HULEEDU_API_KEY": key},
            ["--hold", address, "--batch", batch.batch_id],
            bench="security",
        )
        try:
            opened_at = time.perf_counter()
            while "holding" not in holder.log.read_text():
                if holder.proc.returncode is not None:
                    raise RuntimeError(f"the stream holder failed:\n{holder.tail()}")
                await asyncio.sleep(0.05)
            open_seconds = time.perf_counter() - opened_at
            held = int(holder.log.read_text().split("holding", 1)[1].split()[0])
            loaded, loaded_failures, loaded_cpu = await measured(server, address, checks)
        finally:
            await stop(holder)
    return {
        "streams": held,
        "open_seconds": open_seconds,
        "idle": idle,
        "idle_failures": idle_failures,
        "loaded": loaded,
        "loaded_failures": loaded_failures,
        "idle_cpu": idle_cpu,
        "loaded_cpu": loaded_cpu,
    }


async def measured(server: Process, address: str, checks: int) -> tuple[list[float], int, float]:
    """``health_round``, and the share of one core the BatchService used meanwhile."""
    cpu, began = server.cpu(), time.perf_counter()
    latencies, failures = await health_round(address, checks)
    return latencies, failures, (server.cpu() - cpu) / (time.perf_counter() - began)


async def hold(address: str, batch_id: str) -> None:
    """The holder process: open ``STREAMS`` watches on one channel, report, wait for SIGTERM."""
    stop_event = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop_event.set)
    metadata = (("authorization", f"Bearer {os.environ['HULEEDU_API_KEY']}"),)
    request = batch_pb2.WatchBatchRequest(batch_id=batch_id)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        calls = [stub.WatchBatch(request, metadata=metadata) for _ in range(STREAMS)]
        firsts = await asyncio.gather(*(call.read() for call in calls), return_exceptions=True)
        opened = sum(1 for first in firsts if isinstance(first, batch_pb2.WatchBatchResponse))
        refused = [f for f in firsts if not isinstance(f, batch_pb2.WatchBatchResponse)]
        print(f"holding {opened} streams ({len(refused)} refused: {refused[:1]})", flush=True)
        await stop_event.wait()
        for call in calls:
            call.cancel()


# --- ResolvePipeline with the boundary on and off --------------------------------------------


async def serve_conductor(port: int, keys: str) -> None:
    from conductor_server.app import serve
    from conductor_server.settings import ConductorSettings
    from mesh.settings import SecuritySettings, ServerSettings

    security = SecuritySettings(auth_keys_file=keys, rate_limits=NO_LIMIT) if keys else None
    settings = ConductorSettings(
        server=ServerSettings(host="127.0.0.1", grpc_port=port, metrics_port=-1),
        security=security or SecuritySettings(),
    )
    stop_event = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop_event.set)
    await serve(settings, stop_event)


async def load(address: str, pid: int, seconds: float, key: str) -> Round:
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = conductor_pb2_grpc.PipelineConductorServiceStub(channel)
        await channel.channel_ready()
        register = pb.RegisterBatchRequest(
            batch_id="bench",
            essay_ids=[f"essay-{i}" for i in range(200)],
            flags={"prompt_attached": True},
        )
        await stub.RegisterBatch(register, timeout=10, metadata=metadata)
        for _ in range(200):  # warm up
            await stub.ResolvePipeline(REQUEST, timeout=10, metadata=metadata)
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            call = stub.ResolvePipeline
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await call(REQUEST, timeout=10, metadata=metadata)
                latencies.append(time.perf_counter() - started)

        cpu_before, client_before = cpu_seconds(pid), time.process_time()
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - began
        server_cpu = cpu_seconds(pid) - cpu_before
        client_cpu = time.process_time() - client_before
        return Round(len(latencies), elapsed, latencies, server_cpu, client_cpu)


def resolve_round(kind: str, seconds: float, keys: Path, key: str) -> Round:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_"))}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env["LOG_LEVEL"] = "WARNING"
    args = ["--serve", str(port)] + (["--keys", str(keys)] if kind == "on" else [])
    server = subprocess.Popen([sys.executable, "-m", "bench.security", *args], env=env)
    try:
        import uvloop

        return uvloop.run(
            load(f"127.0.0.1:{port}", server.pid, seconds, key if kind == "on" else "")
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 checks; 2 rounds of 2 s")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--keys", default="", help=argparse.SUPPRESS)
    parser.add_argument("--hold", default="", help=argparse.SUPPRESS)
    parser.add_argument("--batch", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        from mesh.runtime import tune_gc
        from mesh.settings import ServerSettings

        tune_gc(ServerSettings().gc_threshold)
        uvloop.run(serve_conductor(args.serve, args.keys))
        return
    if args.hold:
        asyncio.run(hold(args.hold, args.batch))
        return
    rounds, seconds = (2, 2.0) if args.quick else (args.rounds, args.seconds)
    checks = 300 if args.quick else args.checks
    health = asyncio.run(streams_and_health(checks))
    folder = LOGS / f"security-{os.getpid()}"
    keys, _, key = write_keys(folder)
    results: dict[str, list[Round]] = {"off": [], "on": []}
    for _ in range(rounds):
        for kind in results:
            results[kind].append(resolve_round(kind, seconds, keys, key))
    report(health, results, rounds, seconds, checks)


def report(
    health: dict[str, Any],
    results: dict[str, list[Round]],
    rounds: int,
    seconds: float,
    checks: int,
) -> None:
    idle, loaded = health["idle"], health["loaded"]
    print(
        f"Health checks, {checks} one at a time, with {health['streams']} WatchBatch streams of "
        f"one principal open (opened in {health['open_seconds']:.1f} s) and before"
    )
    print(
        f"{'':<22} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'failures':>9}"
        f" {'BatchService CPU':>17}"
    )
    for name, values, failures, cpu in (
        ("idle", idle, health["idle_failures"], health["idle_cpu"]),
        (
            f"{health['streams']:,} streams open",
            loaded,
            health["loaded_failures"],
            health["loaded_cpu"],
        ),
    ):
        print(
            f"{name:<22} {percentile(values, 0.5):>8.2f} {percentile(values, 0.99):>8.2f}"
            f" {max(values):>8.2f} {failures:>9} {cpu:>16.0%}"
        )
    print()
    best = {kind: max(rs, key=lambda r: r.rate) for kind, rs in results.items()}
    print(f"ResolvePipeline at concurrency {CONCURRENCY}, {rounds} rounds of {seconds:.0f} s")
    print(
        f"{'boundary':<34} {'best req/s':>10} {'median':>8} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'server CPU us/call':>18}"
    )
    names = {"off": "off (no keys, no limits)", "on": "on (API key, scope, token bucket)"}
    for kind, rs in results.items():
        b = best[kind]
        cpu = statistics.median(r.cpu_us_per_call for r in rs)
        print(
            f"{names[kind]:<34} {b.rate:>10,.0f} {statistics.median(r.rate for r in rs):>8,.0f}"
            f" {b.percentile(0.5):>7.2f} {b.percentile(0.99):>7.2f} {cpu:>18.0f}"
        )
    on, off = best["on"], best["off"]
    loaded_p99 = percentile(loaded, 0.99)
    print(
        json.dumps(
            {
                "bench": "security",
                "ours": round(on.rate),
                "baseline": round(off.rate),
                "unit": "requests/s",
                "ratio": round(on.rate / off.rate, 3),
                "ours_median": round(statistics.median(r.rate for r in results["on"])),
                "baseline_median": round(statistics.median(r.rate for r in results["off"])),
                "median_ratio": round(
                    statistics.median(r.rate for r in results["on"])
                    / statistics.median(r.rate for r in results["off"]),
                    3,
                ),
                "ours_server_cpu_us_per_call": round(
                    statistics.median(r.cpu_us_per_call for r in results["on"]), 1
                ),
                "baseline_server_cpu_us_per_call": round(
                    statistics.median(r.cpu_us_per_call for r in results["off"]), 1
                ),
                "streams_open": health["streams"],
                "health_p50_ms_streams": round(percentile(loaded, 0.5), 3),
                "health_p99_ms_streams": round(loaded_p99, 3),
                "health_max_ms_streams": round(max(loaded), 3),
                "health_failures_streams": health["loaded_failures"],
                "health_p99_ms_idle": round(percentile(idle, 0.99), 3),
                "health_failures_idle": health["idle_failures"],
                "batch_cpu_share_streams": round(health["loaded_cpu"], 3),
                "batch_cpu_share_idle": round(health["idle_cpu"], 3),
                "health_goal_met": loaded_p99 <= HEALTH_GOAL_MS and not health["loaded_failures"],
                "checks": checks,
                "rounds": rounds,
                "seconds": seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
