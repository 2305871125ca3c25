"""CancelRun, RetryRun and step timeouts over real gRPC servers (embedded mode).

The workers are played by ``Worker`` (``tests/support/batch.py``) on the shared in-memory bus; a
test changes which essays fail between attempts, or keeps a step's worker silent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2 as details

from clients import RpcError
from conductor_server.settings import ConductorOptions, ConductorSettings
from generated.huleedu.batch.v1 import batch_pb2 as pb
from generated.huleedu.conductor.v1 import conductor_pb2 as cpb
from generated.huleedu.events.v1 import events_pb2 as ev
from mesh.events.memory import MemoryBus
from mesh.events.topics import EventKind
from mesh.settings import BackendSettings
from tests.service.conftest import SERVER, RunningConductor, conductor_service
from tests.support.batch import (
    RunningBatch,
    Worker,
    batch_service,
    events_of,
    settings_for,
    step_commands,
)
from tests.support.polling import eventually

PROMPT = {"prompt_attached": True}
ACTIVE = (pb.RUN_STATUS_PENDING, pb.RUN_STATUS_RUNNING)


@pytest.fixture
async def batches(conductor: RunningConductor) -> AsyncIterator[RunningBatch]:
    async with batch_service(settings_for(conductor.address), conductor.bus) as running:
        yield running


async def _failure(call: object) -> RpcError:
    with pytest.raises(RpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def _run(batches: RunningBatch, batch_id: str) -> pb.PipelineRun:
    return (await batches.client.get_batch_status(batch_id)).runs[0]


async def _run_to_end(batches: RunningBatch, batch_id: str, worker: Worker) -> pb.PipelineRun:
    async def ended() -> bool:
        return (await _run(batches, batch_id)).status not in ACTIVE

    await worker.until(ended)
    return await _run(batches, batch_id)


def _commands(bus: MemoryBus, step: str) -> list[ev.StepCommand]:
    return [c for c in step_commands(bus) if c.step == step]


def _steps(run: pb.PipelineRun) -> list[tuple[str, int, int, int, int]]:
    return [(s.step, s.status, s.succeeded, s.failed, s.total) for s in run.steps]


# --- CancelRun --------------------------------------------------------------------------------


async def test_a_cancelled_run_dispatches_nothing_more_and_late_outcomes_still_count(
    batches: RunningBatch, conductor: RunningConductor
) -> None:
    batch = await batches.client.create_batch([f"Essay {i}." for i in range(4)], flags=PROMPT)
    started = await batches.client.start_pipeline(batch.batch_id, "comprehensive")
    worker = Worker(batches.bus, silent={"nlp", "cj_assessment"})

    async def waiting_on_nlp() -> bool:
        await worker.work()
        return bool(_commands(batches.bus, "nlp"))

    await eventually(waiting_on_nlp, what="nlp dispatched")
    watch = batches.client.watch_batch(batch.batch_id, started.run.run_id)
    first = await anext(watch)
    assert first.run.status == pb.RUN_STATUS_RUNNING

    cancelled = await batches.client.cancel_run(batch.batch_id, started.run.run_id, "wrong essays")
    assert cancelled.status == pb.RUN_STATUS_CANCELLED
    assert cancelled.cancel_reason == "wrong essays"
    assert cancelled.HasField("finished_at")
    by_step = {s.step: s.status for s in cancelled.steps}
    assert by_step == {
        "spellcheck": pb.RUN_STEP_STATUS_SATISFIED,
        "nlp": pb.RUN_STEP_STATUS_CANCELLED,
        "cj_assessment": pb.RUN_STEP_STATUS_CANCELLED,
        "ai_feedback": pb.RUN_STEP_STATUS_CANCELLED,
    }
    updates = [update async for update in watch]  # the stream ends with the run
    assert updates[-1].run.status == pb.RUN_STATUS_CANCELLED
    [told] = events_of(batches.bus, EventKind.RUN_CANCELLED)
    assert (told.run_cancelled.run_id, told.run_cancelled.attempt) == (started.run.run_id, 1)
    assert told.run_cancelled.reason == "wrong essays"
    [done] = events_of(batches.bus, EventKind.PIPELINE_RUN_COMPLETED)
    assert done.pipeline_run_completed.outcome == ev.RUN_OUTCOME_CANCELLED

    worker.silent.clear()
    await worker.work()  # the held commands are answered after all
    state = await conductor.client.get_batch_pipeline_state(batch.batch_id)
    counts = {s.step: (s.succeeded, s.total) for s in state.steps}
    assert counts["nlp"] == (4, 4)  # the conductor counted them: it stays the truth
    assert [c.step for c in step_commands(batches.bus)].count("ai_feedback") == 0
    assert (await _run(batches, batch.batch_id)).status == pb.RUN_STATUS_CANCELLED

    again = await batches.client.cancel_run(batch.batch_id, started.run.run_id)
    assert again.status == pb.RUN_STATUS_CANCELLED  # idempotent
    assert len(events_of(batches.bus, EventKind.RUN_CANCELLED)) == 1


async def test_cancel_error_paths(batches: RunningBatch) -> None:
    batch = await batches.client.create_batch(["An essay."])
    started = await batches.client.start_pipeline(batch.batch_id, "spellcheck")
    await _run_to_end(batches, batch.batch_id, Worker(batches.bus))
    finished = await _failure(batches.client.cancel_run(batch.batch_id, started.run.run_id))
    assert finished.code == grpc.StatusCode.FAILED_PRECONDITION
    assert finished.reason == "RUN_FINISHED"
    unknown = await _failure(batches.client.cancel_run(batch.batch_id, "no-such-run"))
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
    other = await batches.client.create_batch(["Another essay."])
    elsewhere = await _failure(batches.client.cancel_run(other.batch_id, started.run.run_id))
    assert elsewhere.reason == "RUN_NOT_FOUND"
    bad = await _failure(batches.client.cancel_run(batch.batch_id, "a run", "x" * 300))
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    request = bad.detail(details.BadRequest)
    assert request is not None
    assert sorted(v.field for v in request.field_violations) == ["reason", "run_id"]


# --- RetryRun ---------------------------------------------------------------------------------


async def test_a_retry_reruns_only_the_failures_then_the_skipped_steps(
    batches: RunningBatch,
) -> None:
    batch = await batches.client.create_batch([f"Essay {i}." for i in range(20)], flags=PROMPT)
    bad = {e.essay_id for e in batch.essays[:3]}  # 17/20 < 0.9: spellcheck unsatisfied
    worker = Worker(batches.bus, lambda step, essay: essay not in bad)
    started = await batches.client.start_pipeline(batch.batch_id, "nlp")
    first = await _run_to_end(batches, batch.batch_id, worker)
    assert first.status == pb.RUN_STATUS_FAILED

    bad.clear()  # the next attempt succeeds
    retried = await batches.client.retry_run(batch.batch_id, started.run.run_id)
    assert retried.run.attempt == 2
    assert [(s.step, s.essay_count) for s in retried.retried_steps] == [
        ("spellcheck", 3),
        ("nlp", 0),  # waits for spellcheck
    ]
    run = await _run_to_end(batches, batch.batch_id, worker)
    assert run.status == pb.RUN_STATUS_COMPLETED
    assert run.attempt == 2
    assert _steps(run) == [
        ("spellcheck", pb.RUN_STEP_STATUS_SATISFIED, 20, 0, 20),
        ("nlp", pb.RUN_STEP_STATUS_SATISFIED, 20, 0, 20),
    ]
    spellchecks = _commands(batches.bus, "spellcheck")
    assert [(c.attempt, len(c.essays)) for c in spellchecks] == [(1, 20), (2, 3)]
    assert {e.essay_id for e in spellchecks[1].essays} == {e.essay_id for e in batch.essays[:3]}
    assert [(c.attempt, len(c.essays)) for c in _commands(batches.bus, "nlp")] == [(2, 20)]
    ends = events_of(batches.bus, EventKind.PIPELINE_RUN_COMPLETED)
    assert [(e.pipeline_run_completed.attempt, e.pipeline_run_completed.outcome) for e in ends] == [
        (1, ev.RUN_OUTCOME_FAILED),
        (2, ev.RUN_OUTCOME_COMPLETED),
    ]


async def test_dependants_of_a_retried_step_get_only_the_newly_succeeded_essays(
    batches: RunningBatch,
) -> None:
    batch = await batches.client.create_batch([f"Essay {i}." for i in range(20)], flags=PROMPT)
    unlucky = batch.essays[5].essay_id  # 19/20 >= 0.9: satisfied with one failure
    bad = {unlucky}
    worker = Worker(batches.bus, lambda step, essay: not (step == "spellcheck" and essay in bad))
    started = await batches.client.start_pipeline(batch.batch_id, "comprehensive")
    first = await _run_to_end(batches, batch.batch_id, worker)
    assert first.status == pb.RUN_STATUS_COMPLETED_WITH_FAILURES

    bad.clear()
    retried = await batches.client.retry_run(batch.batch_id, started.run.run_id, request_id="r2")
    assert [s.step for s in retried.retried_steps] == [
        "spellcheck",
        "nlp",
        "cj_assessment",
        "ai_feedback",
    ]
    run = await _run_to_end(batches, batch.batch_id, worker)
    assert run.status == pb.RUN_STATUS_COMPLETED
    for step in ("spellcheck", "nlp", "cj_assessment", "ai_feedback"):
        commands = _commands(batches.bus, step)
        assert [c.attempt for c in commands] == [1, 2], step
        assert [e.essay_id for e in commands[1].essays] == [unlucky], step
    assert all(s.succeeded == s.total == 20 for s in run.steps), _steps(run)

    repeat = await batches.client.retry_run(batch.batch_id, started.run.run_id, request_id="r2")
    assert repeat.run.attempt == 2  # the same retry, answered again
    assert len(_commands(batches.bus, "spellcheck")) == 2


async def test_outcomes_of_a_superseded_attempt_change_nothing(
    batches: RunningBatch, conductor: RunningConductor
) -> None:
    batch = await batches.client.create_batch([f"Essay {i}." for i in range(5)])
    bad = {batch.essays[0].essay_id, batch.essays[1].essay_id}
    worker = Worker(batches.bus, lambda step, essay: essay not in bad)
    started = await batches.client.start_pipeline(batch.batch_id, "spellcheck")
    await _run_to_end(batches, batch.batch_id, worker)
    bad.clear()
    await batches.client.retry_run(batch.batch_id, started.run.run_id)
    late = await conductor.client.record_step_outcome(
        batch.batch_id,
        "spellcheck",
        batch.essays[0].essay_id,
        False,
        run_id=started.run.run_id,
        attempt=1,
    )
    assert late.verdict == cpb.OUTCOME_VERDICT_SUPERSEDED
    run = await _run_to_end(batches, batch.batch_id, Worker(batches.bus, duplicate=True))
    assert _steps(run) == [("spellcheck", pb.RUN_STEP_STATUS_SATISFIED, 5, 0, 5)]


async def test_retry_error_paths(batches: RunningBatch) -> None:
    batch = await batches.client.create_batch(["One.", "Two."])
    started = await batches.client.start_pipeline(batch.batch_id, "spellcheck")
    active = await _failure(batches.client.retry_run(batch.batch_id, started.run.run_id))
    assert (active.code, active.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RUN_NOT_FINISHED")
    run = await _run_to_end(batches, batch.batch_id, Worker(batches.bus))
    assert run.status == pb.RUN_STATUS_COMPLETED
    nothing = await _failure(batches.client.retry_run(batch.batch_id, started.run.run_id))
    assert (nothing.code, nothing.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NOTHING_TO_RETRY",
    )
    unknown = await _failure(
        batches.client.retry_run(batch.batch_id, started.run.run_id, steps=["nlp"])
    )
    assert unknown.code == grpc.StatusCode.INVALID_ARGUMENT
    request = unknown.detail(details.BadRequest)
    assert request is not None
    assert [v.field for v in request.field_violations] == ["steps[0]"]
    missing = await _failure(batches.client.retry_run(batch.batch_id, "no-such-run"))
    assert missing.reason == "RUN_NOT_FOUND"


# --- step timeouts ---------------------------------------------------------------------------

PIPELINES = """
pipelines:
  quick:
    description: Spellcheck, then an analysis whose worker may never answer.
    steps:
      - &spellcheck
        name: spellcheck
        service: spellchecker_service
        command: spellcheck
        produces_text: true
        timeout_seconds: 30
      - name: nlp
        service: nlp_service
        command: nlp
        depends_on: [spellcheck]
        min_success_ratio: 0.5
        timeout_seconds: 0.5
"""


@pytest.fixture
async def timed(tmp_path: Path) -> AsyncIterator[tuple[RunningConductor, RunningBatch]]:
    path = tmp_path / "pipelines.yaml"
    path.write_text(PIPELINES)
    settings = ConductorSettings(
        server=SERVER,
        backends=BackendSettings(),
        options=ConductorOptions(pipelines_path=str(path)),
    )
    async with (
        conductor_service(settings, MemoryBus()) as conductor,
        batch_service(
            settings_for(conductor.address, deadline_poll_seconds=0.1), conductor.bus
        ) as batches,
    ):
        yield conductor, batches


async def test_a_step_whose_worker_never_answers_times_out_and_the_run_ends(
    timed: tuple[RunningConductor, RunningBatch],
) -> None:
    conductor, batches = timed
    batch = await batches.client.create_batch([f"Essay {i}." for i in range(3)])
    started = await batches.client.start_pipeline(batch.batch_id, "quick")
    worker = Worker(batches.bus, silent={"nlp"})

    async def nlp_dispatched() -> bool:
        await worker.work()
        return bool(_commands(batches.bus, "nlp"))

    await eventually(nlp_dispatched, what="nlp dispatched")
    dispatched = (await _run(batches, batch.batch_id)).steps[1]
    assert dispatched.status == pb.RUN_STEP_STATUS_DISPATCHED
    assert dispatched.HasField("deadline")

    run = await _run_to_end(batches, batch.batch_id, worker)
    assert run.status == pb.RUN_STATUS_FAILED
    nlp = run.steps[1]
    assert (nlp.status, nlp.succeeded, nlp.failed, nlp.timed_out) == (
        pb.RUN_STEP_STATUS_UNSATISFIED,
        0,
        3,
        3,
    )
    essay = batch.essays[0].essay_id
    found = await conductor.client.get_essay_outcomes(batch.batch_id, [essay])
    [_spellcheck, timed_out] = found.essays[0].steps
    assert (timed_out.step, timed_out.outcome, timed_out.error.code) == (
        "nlp",
        ev.STEP_OUTCOME_FAILED,
        "TIMED_OUT",
    )
    late = await conductor.client.record_step_outcome(
        batch.batch_id, "nlp", essay, True, run_id=started.run.run_id
    )
    assert late.verdict == cpb.OUTCOME_VERDICT_LATE

    worker.silent.clear()  # a retry reopens the timed-out essays, and this time they answer
    await batches.client.retry_run(batch.batch_id, started.run.run_id)
    again = await _run_to_end(batches, batch.batch_id, worker)
    assert again.status == pb.RUN_STATUS_COMPLETED
    assert _steps(again)[1] == ("nlp", pb.RUN_STEP_STATUS_SATISFIED, 3, 0, 3)
