"""The PipelineConductor as a process on real Redis, PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from clients import ConductorClient, RpcError
from generated.huleedu.conductor.v1 import conductor_pb2 as pb
from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope
from mesh.events.bus import OutgoingEvent
from mesh.events.producer import Producer
from mesh.events.topics import EventKind
from tests.conftest import Backends
from tests.e2e.conftest import ServerProcess, run_grpcurl
from tests.support.polling import eventually

SERVICE = "huleedu.conductor.v1.PipelineConductorService"
ESSAYS = [f"essay-{i}" for i in range(40)]


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("bcs_") and not sample.labels
    }


async def test_grpcurl_lists_describes_and_calls_through_reflection(
    conductor_process: ServerProcess, grpcurl: str
) -> None:
    address = conductor_process.address
    services = run_grpcurl(grpcurl, address, "list")
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services
    described = run_grpcurl(grpcurl, address, "describe", SERVICE)
    assert "rpc ResolvePipeline" in described
    run_grpcurl(
        grpcurl,
        address,
        f"{SERVICE}/RegisterBatch",
        data={"batch_id": "cli-batch", "essay_ids": ["a", "b"], "flags": {"prompt_attached": True}},
    )
    resolved = run_grpcurl(
        grpcurl,
        address,
        f"{SERVICE}/ResolvePipeline",
        data={"batch_id": "cli-batch", "target": "ai_feedback", "dry_run": True},
    )
    assert [s["name"] for s in resolved["steps"]] == ["spellcheck", "nlp", "ai_feedback"]
    health = run_grpcurl(grpcurl, address, "grpc.health.v1.Health/Check")
    assert health == {"status": "SERVING"}


async def test_with_redis_down_the_conductor_is_degraded_not_down(
    conductor_process: ServerProcess, backends: Backends, grpcurl: str
) -> None:
    async with ConductorClient(conductor_process.address) as client:
        await client.register_batch("b-redis", ESSAYS, {"prompt_attached": True})
        backends.stop("redis")
        async with httpx.AsyncClient() as http:

            async def degraded() -> bool:
                body = (
                    await http.get(f"http://127.0.0.1:{conductor_process.metrics_port}/healthz")
                ).json()
                return bool(body["status"] == "degraded" and body["backends"]["redis"] is False)

            await eventually(degraded, 30.0, what="/healthz degraded")
        assert run_grpcurl(grpcurl, conductor_process.address, "grpc.health.v1.Health/Check") == {
            "status": "SERVING"
        }
        # Every RPC still answers, from PostgreSQL: a registration, an outcome, a read.
        await client.register_batch("b-during", ESSAYS)
        recorded = await client.record_step_outcome("b-redis", "spellcheck", ESSAYS[0], True)
        assert recorded.newly_recorded
        state = await client.get_batch_pipeline_state("b-redis")
        assert state.steps[0].succeeded == 1
        backends.start("redis")

        async def caught_up() -> bool:
            return (await client.get_batch_pipeline_state("b-redis")).steps[0].succeeded == 1

        await eventually(caught_up, 30.0, (RpcError,), what="reads from Redis again")


async def test_kafka_outcomes_change_state_exactly_and_metrics_show_the_scenario(
    conductor_process: ServerProcess, backends: Backends, kafka_namespace: str
) -> None:
    async with ConductorClient(conductor_process.address) as client:
        await client.register_batch("b-kafka", ESSAYS, {"prompt_attached": True})
        await client.resolve_pipeline("b-kafka", "nlp", dry_run=True)  # rules_success 1
        with pytest.raises(RpcError) as refused:  # rules_error 1
            await client.resolve_pipeline("b-kafka", "no-such-pipeline")
        assert refused.value.code is grpc.StatusCode.NOT_FOUND

        events = []
        for i, essay in enumerate(ESSAYS):
            outcome = events_pb2.STEP_OUTCOME_FAILED if i < 2 else events_pb2.STEP_OUTCOME_SUCCEEDED
            payload = events_pb2.EssayStepOutcome(
                batch_id="b-kafka", step="spellcheck", essay_id=essay, outcome=outcome
            )
            events.append(
                OutgoingEvent(
                    EventKind.ESSAY_STEP_OUTCOME, envelope.build(payload, source_service="e2e")
                )
            )
        duplicated = events + events[::5]  # 20% of outcomes delivered twice
        async with Producer(backends.kafka_bootstrap, namespace=kafka_namespace) as producer:
            await producer.publish_many(duplicated)

        async def counted() -> bool:
            state = await client.get_batch_pipeline_state("b-kafka")
            spell = next(s for s in state.steps if s.step == "spellcheck")
            return spell.status == pb.STEP_STATUS_SATISFIED

        await eventually(counted, 30.0, (RpcError,), what="spellcheck to be satisfied")
        state = await client.get_batch_pipeline_state("b-kafka")
        by_step = {s.step: s for s in state.steps}
        spell = by_step["spellcheck"]
        assert (spell.succeeded, spell.failed, spell.total) == (38, 2, 40)
        assert by_step["nlp"].total == 38

        resolved = await client.resolve_pipeline("b-kafka", "nlp")  # prunes spellcheck
        assert [p.step for p in resolved.pruned_steps] == ["spellcheck"]

    figures = await asyncio.to_thread(_metrics, conductor_process.metrics_port)
    assert figures["bcs_pipeline_config_load_success_total"] == 1
    assert figures["bcs_pipeline_config_load_error_total"] == 0
    assert figures["bcs_pipeline_rules_success_total"] == 2
    assert figures["bcs_pipeline_rules_error_total"] == 1
    assert figures["bcs_pipeline_rules_pruned_total"] == 1


async def test_sigterm_under_load_finishes_in_flight_rpcs_and_exits_zero(
    conductor_process: ServerProcess,
) -> None:
    async with ConductorClient(conductor_process.address) as client:
        await client.register_batch("b-load", ESSAYS, {"prompt_attached": True})
        results: list[str] = []

        async def caller() -> None:
            while True:
                try:
                    await client.resolve_pipeline(
                        "b-load", "comprehensive", dry_run=True, timeout=5
                    )
                    results.append("ok")
                except RpcError as exc:
                    results.append(exc.code.name)
                    if exc.code is grpc.StatusCode.UNAVAILABLE:
                        return

        callers = [asyncio.create_task(caller()) for _ in range(8)]
        await eventually(lambda: len(results) > 200, 30.0, what="200 calls under load")
        code = await conductor_process.terminate()
        await asyncio.wait_for(asyncio.gather(*callers), 30)
    assert code == 0
    # in-flight calls finished; the only failures are new calls refused once it stopped listening
    assert set(results) <= {"ok", "UNAVAILABLE", "CANCELLED"}
    assert results.count("ok") > 200
    assert "PipelineConductor stopped" in conductor_process.logs()
