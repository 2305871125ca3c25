"""Run control with the servers as processes on the real backends: cancel mid-run, retry after
failures (30% of outcomes duplicated, the conductor restarted during the retry), a step whose
worker never answers timing out, and an outcome the step's gates forbid refused.

The workers play the worker services over Kafka: essays in ``failing`` fail on a run's first
attempt and succeed on later ones; a step in ``silent`` is never answered; while ``holding`` the
commands are kept and answered on ``release``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest

from clients import BatchClient, ConductorClient, Credentials, RpcError
from generated.huleedu.batch.v1 import batch_pb2 as pb
from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope
from mesh.events.bus import Message, OutgoingEvent
from mesh.events.producer import Producer
from mesh.events.topics import EventKind
from tests.conftest import Backends
from tests.e2e.conftest import ServerProcess, backend_env, serving_with_workers
from tests.support.polling import eventually

ACTIVE = (pb.RUN_STATUS_PENDING, pb.RUN_STATUS_RUNNING)
PIPELINES = """
pipelines:
  analysis:
    description: Spellcheck, then NLP and CJ of the corrected essays.
    steps:
      - &spellcheck
        name: spellcheck
        service: spellchecker_service
        command: spellcheck
        min_success_ratio: 0.9
        produces_text: true
        timeout_seconds: 120
      - &nlp
        name: nlp
        service: nlp_service
        command: nlp
        depends_on: [spellcheck]
        requires: [prompt_attached]
        min_success_ratio: 0.5
        timeout_seconds: {nlp_timeout}
      - name: cj_assessment
        service: cj_assessment_service
        command: cj_assessment
        depends_on: [spellcheck]
        min_success_ratio: 0.5
        timeout_seconds: 120
"""


class Workers:
    """Answers step commands over Kafka (see the module docstring); 30% of outcomes twice."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self.failing: set[str] = set()
        self.silent: set[str] = set()
        self.holding = False
        self.held: list[events_pb2.StepCommand] = []
        self.commands: list[events_pb2.StepCommand] = []
        self.sent = 0

    async def __call__(self, messages: Sequence[Message]) -> None:
        for message in messages:
            command = message.envelope.step_command
            self.commands.append(command)
            if command.step in self.silent:
                continue
            if self.holding:
                self.held.append(command)
            else:
                await self._answer([command])

    async def release(self) -> None:
        self.holding = False
        held, self.held = self.held, []
        await self._answer(held)

    async def _answer(self, commands: Sequence[events_pb2.StepCommand]) -> None:
        outcomes = []
        for command in commands:
            for essay in command.essays:
                failed = command.attempt <= 1 and essay.essay_id in self.failing
                payload = events_pb2.EssayStepOutcome(
                    batch_id=command.batch_id,
                    step=command.step,
                    essay_id=essay.essay_id,
                    run_id=command.run_id,
                    attempt=command.attempt,
                    outcome=events_pb2.STEP_OUTCOME_FAILED
                    if failed
                    else events_pb2.STEP_OUTCOME_SUCCEEDED,
                )
                built = envelope.build(payload, source_service="e2e-worker")
                outcomes.append(OutgoingEvent(EventKind.ESSAY_STEP_OUTCOME, built))
        duplicates = outcomes[: len(outcomes) * 3 // 10]
        self.sent += len(outcomes) + len(duplicates)
        await self._producer.publish_many(outcomes + duplicates)

    def of(self, step: str) -> list[events_pb2.StepCommand]:
        return [c for c in self.commands if c.step == step]


Mesh = tuple[ServerProcess, ServerProcess, Workers]


@pytest.fixture(params=[120])
async def mesh(
    request: pytest.FixtureRequest,
    backends: Backends,
    database_url: str,
    kafka_namespace: str,
    tmp_path: Path,
) -> AsyncIterator[Mesh]:
    """Both servers as processes over ``PIPELINES`` (nlp's timeout: the fixture's param)."""
    pipelines = tmp_path / "pipelines.yaml"
    pipelines.write_text(PIPELINES.replace("{nlp_timeout}", str(request.param)))
    env = backend_env(backends, database_url, kafka_namespace)
    conductor = ServerProcess(
        "conductor_server",
        {**env, "CONDUCTOR_PIPELINES_PATH": str(pipelines)},
        "CONDUCTOR_",
        tmp_path / "conductor.log",
    )
    batch = ServerProcess(
        "batch_server",
        {
            **env,
            "BATCH_CONDUCTOR_ADDRESS": conductor.address,
            "BATCH_DEADLINE_POLL_SECONDS": "0.2",
        },
        "BATCH_",
        tmp_path / "batch.log",
    )
    async with serving_with_workers(
        conductor, batch, backends, kafka_namespace, Workers
    ) as workers:
        yield conductor, batch, workers


def _client(process: ServerProcess) -> BatchClient:
    return BatchClient(process.address, timeout=20, credentials=Credentials())


async def _ended(client: BatchClient, batch_id: str, within: float = 90) -> pb.PipelineRun:
    async def ended() -> bool:
        return (await client.get_batch_status(batch_id)).runs[0].status not in ACTIVE

    await eventually(ended, within, (RpcError,), what="the run to end")
    return (await client.get_batch_status(batch_id)).runs[0]


async def test_a_cancelled_run_dispatches_nothing_more_and_its_watchers_are_told(
    mesh: Mesh,
) -> None:
    _, batch_process, workers = mesh
    workers.silent = {"nlp", "cj_assessment"}
    async with _client(batch_process) as client:
        batch = await client.create_batch(
            [f"Essay {i}." for i in range(6)], flags={"prompt_attached": True}
        )
        started = await client.start_pipeline(batch.batch_id, "analysis")
        await eventually(lambda: bool(workers.of("nlp")), 60, what="nlp dispatched")
        updates: list[pb.WatchBatchResponse] = []

        async def watch() -> None:
            async for update in client.watch_batch(batch.batch_id, started.run.run_id):
                updates.append(update)

        watching = asyncio.create_task(watch())
        await eventually(lambda: bool(updates), 30, what="the watch's first update")
        cancelled = await client.cancel_run(batch.batch_id, started.run.run_id, "operator")
        assert cancelled.status == pb.RUN_STATUS_CANCELLED
        await asyncio.wait_for(watching, 30)  # the watch ends with the run
        assert updates[-1].run.status == pb.RUN_STATUS_CANCELLED
        assert {s.step: s.status for s in updates[-1].run.steps}["nlp"] == (
            pb.RUN_STEP_STATUS_CANCELLED
        )
        dispatched = len(workers.commands)
        workers.silent.clear()
        await asyncio.sleep(2)  # nothing more is dispatched, whatever arrives
        assert len(workers.commands) == dispatched
        assert (await client.get_batch_status(batch.batch_id)).runs[0].status == (
            pb.RUN_STATUS_CANCELLED
        )


async def test_a_retry_reruns_only_the_failures_exactly_through_a_conductor_restart(
    mesh: Mesh,
) -> None:
    conductor, batch_process, workers = mesh
    async with _client(batch_process) as client:
        batch = await client.create_batch(
            [f"Essay {i}." for i in range(20)], flags={"prompt_attached": True}
        )
        workers.failing = {e.essay_id for e in batch.essays[:3]}  # 17/20 < 0.9 on attempt 1
        started = await client.start_pipeline(batch.batch_id, "analysis")
        first = await _ended(client, batch.batch_id)
        assert first.status == pb.RUN_STATUS_FAILED
        assert [c.step for c in workers.commands] == ["spellcheck"]

        workers.holding = True
        retried = await client.retry_run(batch.batch_id, started.run.run_id, request_id="again")
        assert retried.run.attempt == 2
        await eventually(lambda: bool(workers.held), 60, what="the retry's command")
        await conductor.kill()  # the conductor dies with the retry in flight
        await conductor.start()
        await workers.release()
        run = await _ended(client, batch.batch_id)

    assert run.status == pb.RUN_STATUS_COMPLETED
    assert [(s.step, s.succeeded, s.failed, s.total) for s in run.steps] == [
        ("spellcheck", 20, 0, 20),
        ("nlp", 20, 0, 20),
        ("cj_assessment", 20, 0, 20),
    ]
    [first_try, second_try] = workers.of("spellcheck")
    assert (first_try.attempt, len(first_try.essays)) == (1, 20)
    assert (second_try.attempt, sorted(e.essay_id for e in second_try.essays)) == (
        2,
        sorted(workers.failing),
    )
    assert [(c.attempt, len(c.essays)) for c in workers.of("nlp")] == [(2, 20)]
    async with ConductorClient(conductor.address, credentials=Credentials()) as conductor_client:
        state = await conductor_client.get_batch_pipeline_state(batch.batch_id)
        assert {s.step: (s.succeeded, s.failed, s.total) for s in state.steps} == {
            "spellcheck": (20, 0, 20),
            "nlp": (20, 0, 20),
            "cj_assessment": (20, 0, 20),
        }
        retried_essay = sorted(workers.failing)[0]
        outcomes = await conductor_client.get_essay_outcomes(batch.batch_id, [retried_essay])
        spellcheck = outcomes.essays[0].steps[0]
        assert (spellcheck.step, spellcheck.attempt, spellcheck.run_id) == (
            "spellcheck",
            2,
            started.run.run_id,
        )


@pytest.mark.parametrize("mesh", [2], indirect=True)
async def test_a_step_whose_worker_never_answers_times_out_and_the_run_fails(mesh: Mesh) -> None:
    conductor, batch_process, workers = mesh
    workers.silent = {"nlp"}
    async with _client(batch_process) as client:
        batch = await client.create_batch(
            [f"Essay {i}." for i in range(4)], flags={"prompt_attached": True}
        )
        await client.start_pipeline(batch.batch_id, "analysis")
        run = await _ended(client, batch.batch_id)
    assert run.status == pb.RUN_STATUS_FAILED
    nlp = {s.step: s for s in run.steps}["nlp"]
    assert (nlp.status, nlp.failed, nlp.timed_out, nlp.total) == (
        pb.RUN_STEP_STATUS_UNSATISFIED,
        4,
        4,
        4,
    )
    async with ConductorClient(conductor.address, credentials=Credentials()) as conductor_client:
        found = await conductor_client.get_essay_outcomes(
            batch.batch_id, [batch.essays[0].essay_id]
        )
        by_step = {s.step: s for s in found.essays[0].steps}
        assert by_step["nlp"].error.code == "TIMED_OUT"


async def test_an_outcome_the_step_s_flags_forbid_is_refused(mesh: Mesh) -> None:
    conductor, batch_process, _ = mesh
    async with _client(batch_process) as client:
        batch = await client.create_batch(["One.", "Two."])  # no prompt_attached
        await client.start_pipeline(batch.batch_id, "spellcheck")
        await _ended(client, batch.batch_id)
    async with ConductorClient(conductor.address, credentials=Credentials()) as conductor_client:
        with pytest.raises(RpcError) as caught:
            await conductor_client.record_step_outcome(
                batch.batch_id, "nlp", batch.essays[0].essay_id, True
            )
        state = await conductor_client.get_batch_pipeline_state(batch.batch_id)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.reason == "PREREQUISITES_NOT_MET"
    assert {s.step: s.succeeded for s in state.steps}["nlp"] == 0
