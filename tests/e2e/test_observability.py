"""What operators see of the running servers: /metrics lints clean and has every family the
dashboard and the alert rules read, with values after a real run; the liveness health service.

Both servers and the demo workers run as processes on the real backends (real mode: consumers,
outbox relays); one ``comprehensive`` run goes through before the scrape.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from clients import BatchClient
from generated.huleedu.batch.v1 import batch_pb2 as pb
from tests.conftest import Backends
from tests.e2e.conftest import ROOT, ServerProcess, backend_env, serving
from tests.support.polling import eventually
from tests.support.promql import exported_names, metric_names
from tests.unit.test_deploy import PROMETHEUS_OWN, _dashboard_exprs, _rules

BOTH = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "python_gc_collections_total",
    "python_info",
    "mesh_serving",
    "mesh_backend_up",
    "grpc_server_handled_total",
    "mesh_consumer_lag",
    "mesh_consumer_replayed_total",
    "mesh_consumer_dead_lettered_total",
    "mesh_outbox_backlog_events",
    "mesh_outbox_oldest_event_age_seconds",
    "mesh_outbox_relayed_events_total",
)
CONDUCTOR_ONLY = ("conductor_step_completion_seconds_bucket", "bcs_pipeline_rules_success_total")
BATCH_ONLY = (
    "batch_step_transition_seconds_bucket",
    "batch_run_duration_seconds_bucket",
    "batch_active_runs",
    "batch_oldest_active_run_age_seconds",
)


@pytest.fixture
async def mesh(
    backends: Backends, database_url: str, kafka_namespace: str, tmp_path: Path
) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    env = {**backend_env(backends, database_url, kafka_namespace), "LOG_FORMAT": "json"}
    conductor = ServerProcess("conductor_server", env, "CONDUCTOR_", tmp_path / "conductor.log")
    batch = ServerProcess(
        "batch_server",
        {**env, "BATCH_CONDUCTOR_ADDRESS": conductor.address},
        "BATCH_",
        tmp_path / "batch.log",
    )
    with (tmp_path / "workers.log").open("ab") as log:
        workers = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "launcher.workers",
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=log,
        )
    try:
        async with serving(conductor, batch):
            yield conductor, batch
            workers.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(workers.wait(), 30) == 0
    finally:
        if workers.returncode is None:
            workers.kill()
            await workers.wait()


async def _scrape(server: ServerProcess) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5)
    response.raise_for_status()
    return response.text


def _value(exposition: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def _has_sample(exposition: str, name: str) -> bool:
    return any(
        sample.name == name
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    )


async def test_metrics_lint_clean_and_cover_the_dashboard_and_the_alerts(
    mesh: tuple[ServerProcess, ServerProcess],
) -> None:
    conductor, batch = mesh
    async with BatchClient(batch.address) as client:
        created = await client.create_batch(
            ["One essay.", "Two essays.", "Three essays."], flags={"prompt_attached": True}
        )
        await client.start_pipeline(created.batch_id, "comprehensive")

        async def ended() -> bool:
            status = await client.get_batch_status(created.batch_id)
            return status.runs[0].status == pb.RUN_STATUS_COMPLETED

        await eventually(ended, 90, what="the run to complete")

    async def measured() -> bool:  # lag is measured every 5 s, the active runs every 15 s
        texts = [await _scrape(conductor), await _scrape(batch)]
        return all(_has_sample(t, "mesh_consumer_lag") for t in texts)

    await eventually(measured, 30, what="the consumers' lag to be measured")
    texts = {"conductor": await _scrape(conductor), "batch": await _scrape(batch)}

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make deploy-tools`"
    for name, text in texts.items():
        lint = await asyncio.create_subprocess_exec(
            promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
        )
        out, _ = await lint.communicate(text.encode())
        assert lint.returncode == 0, f"{name}: {out.decode()}"

    conductor_names, batch_names = (exported_names(t) for t in texts.values())
    for wanted in BOTH:
        assert wanted in conductor_names, wanted
        assert wanted in batch_names, wanted
    for wanted in CONDUCTOR_ONLY:
        assert wanted in conductor_names, wanted
    for wanted in BATCH_ONLY:
        assert wanted in batch_names, wanted

    exported = conductor_names | batch_names | PROMETHEUS_OWN
    read = set().union(
        *(metric_names(e) for e in _dashboard_exprs() + [r["expr"] for r in _rules()])
    )
    assert read <= exported, sorted(read - exported)

    conductor_text, batch_text = texts["conductor"], texts["batch"]
    assert _value(conductor_text, "conductor_step_completion_seconds_count") == 4  # four steps
    assert _value(batch_text, "batch_step_transition_seconds_count") >= 2  # dispatching ones
    ended_runs = _value(
        batch_text, "batch_run_duration_seconds_count", pipeline="comprehensive", status="completed"
    )
    assert ended_runs == 1
    assert _value(batch_text, "mesh_outbox_relayed_events_total") > 0
    assert _value(conductor_text, "mesh_outbox_relayed_events_total") > 0
    assert _value(conductor_text, "mesh_consumer_lag") == 0
    assert _value(conductor_text, "process_cpu_seconds_total") > 0


async def test_liveness_stays_serving_and_logs_are_json(
    mesh: tuple[ServerProcess, ServerProcess],
) -> None:
    conductor, _ = mesh
    assert await conductor.health("liveness") == health_pb2.HealthCheckResponse.SERVING
    assert await conductor.health("") == health_pb2.HealthCheckResponse.SERVING
    lines = [line for line in conductor.logs().splitlines() if line.startswith("{")]
    assert lines, conductor.logs()
    parsed = json.loads(lines[-1])
    assert {"time", "level", "logger", "message", "correlation_id"} <= parsed.keys()
