"""``python -m launcher`` (``make run``): the whole product in one process.

Embedded mode (no backend variables): both servers share one in-memory event bus, and demo
workers answer every step command, so a batch runs end to end on a bare machine. They bind
127.0.0.1 and, without ``AUTH_KEYS_FILE``, run without authentication; the banner says which.
With ``REDIS_URL``, ``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` set, the same command runs
both servers (and the workers) against the real backends, which needs ``AUTH_KEYS_FILE`` (and
``CONDUCTOR_API_KEY``, the BatchService's key at the conductor) or ``AUTH_DISABLED=true``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from typing import Any

from prometheus_client import CollectorRegistry

from batch_server.settings import BatchSettings
from conductor_server.settings import ConductorSettings
from launcher.workers import ACCEPTED, GROUP, TOPICS, DemoWorkers
from mesh.app import open_bus
from mesh.grpc.server import GrpcServer
from mesh.runtime import StartupError, configure_logging, run, until_stopped, usage_errors
from mesh.tracing.provider import open_tracing

log = logging.getLogger("launcher")

EXAMPLES = """
HuleEdu pipeline mesh is up ({mode} mode).
  BatchService       {batch}   (metrics http://{host}:{batch_metrics}/metrics)
  PipelineConductor  {conductor}   (metrics http://{host}:{conductor_metrics}/metrics)
  Authentication     {auth}
{key_hint}
Try it (Python SDK CLI):
  .venv/bin/huleedu batch create --flag prompt_attached "Teh first essay." "A second essay."
  .venv/bin/huleedu batch start <batch_id> comprehensive
  .venv/bin/huleedu batch watch <batch_id>

Or with grpcurl (server reflection, no proto files needed):
  grpcurl -plaintext{header} {batch} list
  grpcurl -plaintext{header} -d '{{"essays":[{{"text":"Teh first essay."}},{{"text":"A second essay."}}],"metadata":{{"flags":{{"prompt_attached":true}}}}}}' {batch} huleedu.batch.v1.BatchService/CreateBatch
  grpcurl -plaintext{header} -d '{{"batch_id":"<batch_id>","pipeline":"comprehensive"}}' {batch} huleedu.batch.v1.BatchService/StartPipeline
  grpcurl -plaintext{header} -d '{{"batch_id":"<batch_id>"}}' {batch} huleedu.batch.v1.BatchService/WatchBatch
Press Ctrl-C to stop.
"""


async def _started(
    serve: Any, settings: Any, stop: asyncio.Event, **kwargs: Any
) -> tuple[asyncio.Task[None], GrpcServer]:
    ready: asyncio.Future[GrpcServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop, on_ready=ready.set_result, **kwargs))
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # start-up failed: raise its StartupError
        raise RuntimeError("server exited during start-up")
    return task, ready.result()


async def _serve(
    args: argparse.Namespace,
    conductor_settings: ConductorSettings,
    batch_settings: BatchSettings,
    stop: asyncio.Event,
) -> None:
    from batch_server.app import serve as serve_batch
    from conductor_server.app import serve as serve_conductor

    backends = conductor_settings.backends
    _check_conductor_credentials(conductor_settings, batch_settings)
    async with open_bus(backends, "launcher", CollectorRegistry()) as bus:
        conductor_task, conductor = await _started(
            serve_conductor, conductor_settings, stop, bus=bus
        )
        batch_settings = dataclasses.replace(
            batch_settings,
            options=dataclasses.replace(
                batch_settings.options, conductor_address=f"127.0.0.1:{conductor.port}"
            ),
        )
        batch_task, batch = await _started(serve_batch, batch_settings, stop, bus=bus)
        loops = [conductor_task, batch_task]
        workers = None
        worker_tracing = open_tracing(conductor_settings.telemetry, GROUP)
        if not args.no_workers:
            workers = bus.consumer(
                GROUP,
                TOPICS,
                worker_tracing.consumer(
                    DemoWorkers(
                        bus,
                        args.failure_rate,
                        args.worker_delay,
                        backends.kafka_namespace,
                        args.silent_step,
                    )
                ),
                service=GROUP,
                accept=ACCEPTED,
            )
            await workers.start()
            loops.append(asyncio.create_task(workers.run(), name="demo-workers"))
        print(
            _banner(backends.mode.value, batch_settings.server.host, batch, conductor), flush=True
        )
        try:  # a server (or the workers) ending early stops the rest, and the process exits 1
            await until_stopped(stop, loops)
        finally:
            stop.set()
            if workers is not None:
                await workers.stop()
                await asyncio.gather(loops[-1], return_exceptions=True)
                await workers.close()
            ended = await asyncio.gather(batch_task, conductor_task, return_exceptions=True)
            await asyncio.to_thread(worker_tracing.close)
        for error in ended:  # a server that failed while shutting down
            if isinstance(error, BaseException):
                raise error


def _check_conductor_credentials(conductor: ConductorSettings, batch: BatchSettings) -> None:
    """With authentication on at the conductor, the BatchService needs credentials there."""
    guarded = conductor.security.auth_keys_file or conductor.security.auth_keys_from_database
    o = batch.options
    if guarded and not (o.conductor_api_key or o.conductor_cert_file):
        raise StartupError(
            "the conductor requires authentication: set CONDUCTOR_API_KEY to a key of the "
            "BatchService (scopes batches:register and pipelines:read)"
        )


def _banner(mode: str, host: str, batch: GrpcServer, conductor: GrpcServer) -> str:
    guarded = batch.boundary.guard.enabled
    return EXAMPLES.format(
        mode=mode,
        host=host,
        batch=f"{host}:{batch.port}",
        batch_metrics=batch.metrics_port,
        conductor=f"{host}:{conductor.port}",
        conductor_metrics=conductor.metrics_port,
        auth=batch.boundary.summary,
        key_hint=(
            "  (a key of AUTH_KEYS_FILE goes in HULEEDU_API_KEY for the CLI and SDK; "
            "huleedu keys new makes one)\n"
            if guarded
            else ""
        ),
        header=' -H "authorization: Bearer $HULEEDU_API_KEY"' if guarded else "",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher", description=__doc__.splitlines()[0])
    parser.add_argument("--no-workers", action="store_true", help="do not start the demo workers")
    parser.add_argument(
        "--failure-rate",
        type=float,
        default=0.0,
        help="share of essays the demo workers fail (default 0: every run succeeds, so the "
        "README session always reads the same; 0.2 shows failed essays and skipped steps)",
    )
    parser.add_argument(
        "--worker-delay", type=float, default=0.5, help="seconds a demo worker takes per command"
    )
    parser.add_argument(
        "--silent-step",
        action="append",
        default=[],
        metavar="STEP",
        help="the demo workers never answer this step (it times out after its timeout_seconds); "
        "repeatable",
    )
    args = parser.parse_args(argv)
    with usage_errors(parser):
        conductor_settings = ConductorSettings.from_env(os.environ)
        batch_settings = BatchSettings.from_env(os.environ)
        server = conductor_settings.server
        configure_logging(server.log_level, server.log_format)
    return run(lambda stop: _serve(args, conductor_settings, batch_settings, stop), server)


if __name__ == "__main__":
    sys.exit(main())
