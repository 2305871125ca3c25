"""ResolvePipeline throughput and latency vs an empty ``grpc.aio`` handler, same run, same way.

Both servers run as their own process on uvloop with the servers' garbage-collector setting
(``mesh.runtime.tune_gc``), on loopback, and are loaded the same way: one client process holding
``--concurrency`` calls in flight over one channel for ``--seconds``.

- **baseline**: a bare ``grpc.aio`` server whose ``ResolvePipeline`` returns an empty response
  (no interceptor, no health, no work): the cost of gRPC itself on this machine.
- **ours**: the real PipelineConductor (``conductor_server.app.serve``, embedded mode: the
  in-memory store; the production interceptor, health, reflection and metrics all on) resolving
  ``comprehensive`` for a registered batch with ``dry_run`` (nothing is published);
- **real mode**: the same server on real PostgreSQL, Redis and Kafka, so every resolution reads
  the batch's state from the Redis mirror (one HGETALL). Its goal: at least 0.8x the embedded
  server in the same run (``real_vs_embedded``, best rounds).

Real mode uses ``REDIS_URL``, ``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` from the
environment (a fresh database on that server and a private Kafka namespace), else a private
devstack. Rounds alternate the contenders; the figure per contender is its best round (other
load only slows a run down). Usage: ``python -m bench.conductor [--quick]``; the last line is
JSON.

``--before DIR`` adds a contender: the embedded conductor of another source tree (e.g. the code
before a change, ``git archive main | tar -x -C DIR``), served the same way in the same run;
``ours_vs_before`` is ours over it (best rounds). Tracing is off in every contender (no
``OTEL_*`` variable reaches them), as it is by default.
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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from bench.harness.backends import backends, create_database, drop_database
from bench.harness.ports import free_port
from bench.harness.processes import cpu_seconds
from generated.huleedu.conductor.v1 import conductor_pb2 as pb
from generated.huleedu.conductor.v1 import conductor_pb2_grpc

ESSAYS = [f"essay-{i}" for i in range(200)]
NAMES = {
    "empty": "empty grpc.aio handler (baseline)",
    "conductor": "PipelineConductor (ours)",
    "real": "PipelineConductor, real backends",
    "before": "PipelineConductor, --before tree",
}
SERVICE = "huleedu.conductor.v1.PipelineConductorService"
REQUEST = pb.ResolvePipelineRequest(batch_id="bench", target="comprehensive", dry_run=True)


async def _empty_register(request: Any, context: Any) -> pb.RegisterBatchResponse:
    return pb.RegisterBatchResponse()


async def _empty_resolve(request: Any, context: Any) -> pb.ResolvePipelineResponse:
    return pb.ResolvePipelineResponse()


def _empty_handlers() -> grpc.GenericRpcHandler:
    """The two RPCs the load uses, doing nothing, registered like generated code does."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "RegisterBatch": grpc.unary_unary_rpc_method_handler(
            _empty_register,
            request_deserializer=pb.RegisterBatchRequest.FromString,
            response_serializer=pb.RegisterBatchResponse.SerializeToString,
        ),
        "ResolvePipeline": grpc.unary_unary_rpc_method_handler(
            _empty_resolve,
            request_deserializer=pb.ResolvePipelineRequest.FromString,
            response_serializer=pb.ResolvePipelineResponse.SerializeToString,
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


async def _serve_empty(port: int) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_empty_handlers(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


async def _serve_conductor(port: int, real: bool) -> None:
    from conductor_server.app import serve
    from conductor_server.settings import ConductorSettings
    from mesh.settings import BackendSettings, SecuritySettings, ServerSettings, from_env

    settings = ConductorSettings(
        server=ServerSettings(host="127.0.0.1", grpc_port=port, metrics_port=-1),
        backends=from_env(BackendSettings, os.environ) if real else BackendSettings(),
        security=SecuritySettings(auth_disabled=real),  # bench/security.py measures auth
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await serve(settings, stop)


@contextlib.contextmanager
def real_backends() -> Iterator[dict[str, str]]:
    """The environment of the real-mode server: the backends, a fresh database, a namespace."""
    with backends() as stack:
        database = asyncio.run(create_database(stack.database_url))
        try:
            yield {
                "REDIS_URL": stack.redis_url,
                "DATABASE_URL": database,
                "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
                "KAFKA_NAMESPACE": f"bench{uuid.uuid4().hex[:8]}",
            }
        finally:
            asyncio.run(drop_database(stack.database_url, database))


@dataclass
class Round:
    calls: int
    seconds: float
    latencies: list[float]
    server_cpu: float  # CPU seconds the server process spent during the timed window
    client_cpu: float  # and the load-generating client process

    @property
    def cpu_us_per_call(self) -> float:
        return self.server_cpu / self.calls * 1e6

    @property
    def client_cpu_us_per_call(self) -> float:
        return self.client_cpu / self.calls * 1e6

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _load(address: str, server_pid: int, concurrency: int, seconds: float) -> Round:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = conductor_pb2_grpc.PipelineConductorServiceStub(channel)
        await channel.channel_ready()
        register = pb.RegisterBatchRequest(
            batch_id="bench", essay_ids=ESSAYS, flags={"prompt_attached": True}
        )
        await stub.RegisterBatch(register, timeout=10)
        for _ in range(200):  # warm up
            await stub.ResolvePipeline(REQUEST, timeout=10)
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            call = stub.ResolvePipeline
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await call(REQUEST, timeout=10)
                latencies.append(time.perf_counter() - started)

        cpu_before, client_before = cpu_seconds(server_pid), time.process_time()
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        server_cpu = cpu_seconds(server_pid) - cpu_before
        return Round(
            len(latencies), elapsed, latencies, server_cpu, time.process_time() - client_before
        )


def _round(
    kind: str, concurrency: int, seconds: float, real_env: dict[str, str], before: str = ""
) -> Round:
    port = free_port()
    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    for name in ("REDIS_URL", "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        env.pop(name, None)  # embedded unless this is the real-mode contender
    for name in [n for n in env if n.startswith("OTEL_")]:
        env.pop(name)  # tracing off, as by default
    if kind == "real":
        env.update(real_env)
    serve_as, cwd = kind, None
    if kind == "before":  # the other tree's own bench module serves its conductor
        serve_as, cwd = "conductor", before
        env["PYTHONPATH"] = before
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.conductor", "--serve", serve_as, "--port", str(port)],
        env=env,
        cwd=cwd,
    )
    try:
        import uvloop

        return uvloop.run(_load(f"127.0.0.1:{port}", server.pid, concurrency, seconds))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", choices=list(NAMES), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--before", default="", help="another source tree's conductor as well")
    args = parser.parse_args()
    if args.serve:
        import uvloop

        from mesh.runtime import tune_gc
        from mesh.settings import ServerSettings

        tune_gc(ServerSettings().gc_threshold)  # as the entry points do, for both servers
        uvloop.run(
            _serve_empty(args.port)
            if args.serve == "empty"
            else _serve_conductor(args.port, real=args.serve == "real")
        )
        return
    rounds, seconds = (2, 2.0) if args.quick else (args.rounds, args.seconds)
    kinds = [kind for kind in NAMES if kind != "before" or args.before]
    results: dict[str, list[Round]] = {kind: [] for kind in kinds}
    with real_backends() as real_env:
        for _ in range(rounds):
            for kind in results:
                results[kind].append(_round(kind, args.concurrency, seconds, real_env, args.before))
    best = {kind: max(rs, key=lambda r: r.rate) for kind, rs in results.items()}
    print(f"ResolvePipeline at concurrency {args.concurrency}, {rounds} rounds of {seconds:.0f} s")
    print(
        f"{'server':<34} {'best req/s':>10} {'median':>8} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'server CPU us/call':>18} {'client CPU us/call':>18}"
    )
    for kind, rs in results.items():
        b = best[kind]
        median = statistics.median(r.rate for r in rs)
        p50, p99 = b.percentile(0.5), b.percentile(0.99)
        cpu = statistics.median(r.cpu_us_per_call for r in rs)
        client = statistics.median(r.client_cpu_us_per_call for r in rs)
        print(
            f"{NAMES[kind]:<34} {b.rate:>10,.0f} {median:>8,.0f} {p50:>7.2f} {p99:>7.2f}"
            f" {cpu:>18.0f} {client:>18.0f}"
        )
    ours, base, real = best["conductor"], best["empty"], best["real"]
    compared: dict[str, Any] = {}
    if "before" in best:
        before_runs = results["before"]
        compared = {
            "before": round(best["before"].rate),
            "before_median": round(statistics.median(r.rate for r in before_runs)),
            "ours_vs_before": round(ours.rate / best["before"].rate, 3),
            "ours_vs_before_median": round(
                statistics.median(r.rate for r in results["conductor"])
                / statistics.median(r.rate for r in before_runs),
                3,
            ),
        }
    print(
        json.dumps(
            {
                "bench": "conductor",
                "ours": round(ours.rate),
                "baseline": round(base.rate),
                "unit": "requests/s",
                "ratio": round(ours.rate / base.rate, 3),
                "ours_median": round(statistics.median(r.rate for r in results["conductor"])),
                "baseline_median": round(statistics.median(r.rate for r in results["empty"])),
                "ours_p50_ms": round(ours.percentile(0.5), 3),
                "ours_p99_ms": round(ours.percentile(0.99), 3),
                "baseline_p50_ms": round(base.percentile(0.5), 3),
                "baseline_p99_ms": round(base.percentile(0.99), 3),
                "ours_server_cpu_us_per_call": round(
                    statistics.median(r.cpu_us_per_call for r in results["conductor"])
                ),
                "baseline_server_cpu_us_per_call": round(
                    statistics.median(r.cpu_us_per_call for r in results["empty"])
                ),
                "real": round(real.rate),
                "real_median": round(statistics.median(r.rate for r in results["real"])),
                "real_p50_ms": round(real.percentile(0.5), 3),
                "real_p99_ms": round(real.percentile(0.99), 3),
                "real_server_cpu_us_per_call": round(
                    statistics.median(r.cpu_us_per_call for r in results["real"])
                ),
                "real_vs_embedded": round(real.rate / ours.rate, 3),
                **compared,
                "concurrency": args.concurrency,
                "rounds": rounds,
                "seconds": seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
