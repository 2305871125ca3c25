"""BatchService RPCs over a real gRPC server (embedded mode) and a real embedded conductor.

The worker services are played by ``Worker``: it answers StepCommands on the shared in-memory bus
with EssayStepOutcomes; the conductor counts them and announces BatchStepCompleted; the
BatchService advances its runs. Every error path is checked for its status code and detail type.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from google.rpc import error_details_pb2 as details

from batch_server.app import serve as serve_batch
from batch_server.conductor import Conductor
from batch_server.domain.model import Batch, BatchMetadata, Essay
from bench.harness.ports import free_port
from clients import BatchClient, RpcError
from conductor_server.app import serve as serve_conductor
from conductor_server.settings import ConductorSettings
from generated.huleedu.batch.v1 import batch_pb2 as pb
from generated.huleedu.events.v1 import events_pb2 as ev
from mesh import correlation
from mesh.events.memory import MemoryBus
from mesh.events.topics import EventKind
from mesh.grpc.server import GrpcServer
from mesh.settings import BackendSettings, ServerSettings
from tests.service.conftest import RunningConductor
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


@pytest.fixture
async def batches(conductor: RunningConductor) -> AsyncIterator[RunningBatch]:
    async with batch_service(settings_for(conductor.address), conductor.bus) as running:
        yield running


async def _failure(call: object) -> RpcError:
    with pytest.raises(RpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def _run_of(batches: RunningBatch, batch_id: str) -> pb.PipelineRun:
    return (await batches.client.get_batch_status(batch_id)).runs[0]


async def _finished(batches: RunningBatch, batch_id: str) -> bool:
    run = await _run_of(batches, batch_id)
    return run.status not in (pb.RUN_STATUS_PENDING, pb.RUN_STATUS_RUNNING)


async def _run_to_end(batches: RunningBatch, batch_id: str, worker: Worker) -> pb.PipelineRun:
    await worker.until(lambda: _finished(batches, batch_id))
    return await _run_of(batches, batch_id)


# --- TriggerSpellcheck --------------------------------------------------------------------


async def test_trigger_spellcheck_publishes_the_seed_event(batches: RunningBatch) -> None:
    with correlation.bound("corr-trigger-1"):
        response = await batches.client.trigger_spellcheck("Teh essay.", language="sv")
    assert response.correlation_id == "corr-trigger-1"
    assert response.essay_id
    assert response.text_storage_id
    [event] = events_of(batches.bus, EventKind.ESSAY_SPELLCHECK_REQUESTED)
    payload = event.essay_spellcheck_requested
    assert payload.entity_ref.entity_id == response.essay_id
    assert payload.entity_ref.entity_type == "essay"
    assert payload.status == ev.ESSAY_STATUS_PENDING_SPELLCHECK
    assert payload.system_metadata.correlation_id == "corr-trigger-1"
    assert payload.system_metadata.timestamp.seconds > 0
    assert payload.text_storage_id == response.text_storage_id
    assert payload.language == "sv"
    assert event.correlation_id == "corr-trigger-1"
    assert event.source_service == "huleedu-batch-service"


async def test_trigger_spellcheck_defaults_the_language(batches: RunningBatch) -> None:
    await batches.client.trigger_spellcheck("Some text.")
    [event] = events_of(batches.bus, EventKind.ESSAY_SPELLCHECK_REQUESTED)
    assert event.essay_spellcheck_requested.language == "en"


@pytest.mark.parametrize(
    ("text", "language", "field"), [("  ", "", "text"), ("ok", "not a tag!", "language")]
)
async def test_trigger_spellcheck_rejects_bad_input(
    batches: RunningBatch, text: str, language: str, field: str
) -> None:
    error = await _failure(batches.client.trigger_spellcheck(text, language=language))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    bad = error.detail(details.BadRequest)
    assert isinstance(bad, details.BadRequest)
    assert [v.field for v in bad.field_violations] == [field]
    assert events_of(batches.bus, EventKind.ESSAY_SPELLCHECK_REQUESTED) == []


async def test_content_service_down_is_unavailable_and_writes_nothing(
    conductor: RunningConductor,
) -> None:
    settings = settings_for(
        conductor.address, content_service_url=f"http://127.0.0.1:{free_port()}/v1/content"
    )
    async with batch_service(settings, conductor.bus) as batches:
        for call in (
            batches.client.trigger_spellcheck("An essay."),
            batches.client.create_batch(["An essay."], request_id="r-content-down"),
        ):
            error = await _failure(call)
            assert error.code == grpc.StatusCode.UNAVAILABLE
            info = error.detail(details.ResourceInfo)
            assert isinstance(info, details.ResourceInfo)
            assert info.resource_name == "content-service"
        assert list((await batches.client.list_batches()).batches) == []
        assert events_of(batches.bus, EventKind.ESSAY_SPELLCHECK_REQUESTED) == []
        assert events_of(batches.bus, EventKind.BATCH_CREATED) == []


# --- CreateBatch --------------------------------------------------------------------------


async def test_create_batch_generates_ids_and_publishes_batch_created(
    batches: RunningBatch, conductor: RunningConductor
) -> None:
    batch = await batches.client.create_batch(
        ["One.", "Two.", "Three."], name="Class 9B", flags=PROMPT, course_code="ENG5"
    )
    assert len({e.essay_id for e in batch.essays}) == 3
    assert [e.client_ref for e in batch.essays] == ["essay-0", "essay-1", "essay-2"]
    assert all(e.current_storage_id == e.original_storage_id for e in batch.essays)
    assert batch.metadata.language == "en"
    assert batch.metadata.course_code == "ENG5"
    [created] = events_of(batches.bus, EventKind.BATCH_CREATED)
    assert created.batch_created.batch_id == batch.batch_id
    assert [e.essay_id for e in created.batch_created.essays] == [e.essay_id for e in batch.essays]
    assert dict(created.batch_created.flags) == PROMPT
    registered = await conductor.client.get_batch_pipeline_state(batch.batch_id)
    assert registered.essay_count == 3


async def test_create_batch_is_idempotent_by_request_id(batches: RunningBatch) -> None:
    first = await batches.client.create_batch(["One.", "Two."], request_id="req-42")
    again = await batches.client.create_batch(["One.", "Two."], request_id="req-42")
    assert again == first
    assert len(events_of(batches.bus, EventKind.BATCH_CREATED)) == 1
    assert len((await batches.client.list_batches()).batches) == 1


async def test_a_reused_request_id_with_another_batch_is_invalid(batches: RunningBatch) -> None:
    await batches.client.create_batch(["One."], request_id="req-7")
    error = await _failure(batches.client.create_batch(["Other."], request_id="req-7"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "REQUEST_ID_REUSED"
    bad = error.detail(details.BadRequest)
    assert isinstance(bad, details.BadRequest)
    assert bad.field_violations[0].field == "request_id"


async def test_create_batch_concurrent_retries_give_one_batch(batches: RunningBatch) -> None:
    created = await asyncio.gather(
        *(batches.client.create_batch(["A.", "B."], request_id="same") for _ in range(5))
    )
    assert len({b.batch_id for b in created}) == 1
    assert len(events_of(batches.bus, EventKind.BATCH_CREATED)) == 1


async def test_create_batch_rejects_bad_input_naming_every_field(batches: RunningBatch) -> None:
    request = pb.CreateBatchRequest(
        request_id="has space",
        essays=[pb.EssayInput(text="fine"), pb.EssayInput(text="")],
        metadata=pb.BatchMetadata(language="??", flags={"bad flag": True}),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await batches.client.stub.CreateBatch(request, timeout=5)
    error = RpcError.from_aio(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    bad = error.detail(details.BadRequest)
    assert isinstance(bad, details.BadRequest)
    fields = {v.field for v in bad.field_violations}
    assert fields == {
        "request_id",
        "essays[1].text",
        "metadata.language",
        "metadata.flags['bad flag']",
    }


async def test_create_batch_without_essays_is_invalid(batches: RunningBatch) -> None:
    error = await _failure(batches.client.create_batch([]))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_conductor_down_is_unavailable_and_stores_nothing(
    conductor: RunningConductor,
) -> None:
    async with batch_service(settings_for(f"127.0.0.1:{free_port()}"), conductor.bus) as b:
        error = await _failure(b.client.create_batch(["An essay."], timeout=20))
        assert error.code == grpc.StatusCode.UNAVAILABLE
        info = error.detail(details.ResourceInfo)
        assert isinstance(info, details.ResourceInfo)
        assert info.resource_name == "conductor"
        assert list((await b.client.list_batches()).batches) == []
        assert events_of(b.bus, EventKind.BATCH_CREATED) == []


# --- StartPipeline ------------------------------------------------------------------------


async def test_a_spellcheck_run_completes_and_reports_exact_counts(
    batches: RunningBatch,
) -> None:
    batch = await batches.client.create_batch([f"Essay {i}." for i in range(5)])
    started = await batches.client.start_pipeline(batch.batch_id, "spellcheck", request_id="s1")
    assert list(started.steps) == ["spellcheck"]
    assert list(started.pruned_steps) == []
    assert started.run.status == pb.RUN_STATUS_RUNNING
    assert started.run.definition_version
    run = await _run_to_end(batches, batch.batch_id, Worker(batches.bus))
    assert run.status == pb.RUN_STATUS_COMPLETED
    [step] = run.steps
    assert (step.status, step.succeeded, step.failed, step.total) == (
        pb.RUN_STEP_STATUS_SATISFIED,
        5,
        0,
        5,
    )
    assert run.HasField("finished_at")
    status = await batches.client.get_batch_status(batch.batch_id)
    assert {e.current_storage_id for e in status.batch.essays} == {
        f"spellcheck-out-{e.essay_id}" for e in batch.essays
    }
    [done] = events_of(batches.bus, EventKind.PIPELINE_RUN_COMPLETED)
    completed = done.pipeline_run_completed
    assert completed.run_id == run.run_id
    assert completed.outcome == ev.RUN_OUTCOME_COMPLETED
    assert list(completed.completed_steps) == ["spellcheck"]
    assert (completed.succeeded_essay_count, completed.failed_essay_count) == (5, 0)


async def test_the_next_step_gets_only_succeeded_essays_with_their_latest_text(
    batches: RunningBatch,
) -> None:
    batch = await batches.client.create_batch([f"Essay {i}." for i in range(20)], flags=PROMPT)
    unlucky = batch.essays[3].essay_id
    worker = Worker(
        batches.bus, lambda step, essay: not (step == "spellcheck" and essay == unlucky)
    )
    await batches.client.start_pipeline(batch.batch_id, "nlp")
    run = await _run_to_end(batches, batch.batch_id, worker)
    assert run.status == pb.RUN_STATUS_COMPLETED_WITH_FAILURES  # 19/20 >= 0.9
    [spellcheck, nlp] = step_commands(batches.bus)
    assert len(spellcheck.essays) == 20
    assert unlucky not in {e.essay_id for e in nlp.essays}
    assert len(nlp.essays) == 19
    assert all(e.text_storage_id == f"spellcheck-out-{e.essay_id}" for e in nlp.essays)
    assert [(s.step, s.succeeded, s.failed, s.total) for s in run.steps] == [
        ("spellcheck", 19, 1, 20),
        ("nlp", 19, 0, 19),
    ]
    [done] = events_of(batches.bus, EventKind.PIPELINE_RUN_COMPLETED)
    counts = done.pipeline_run_completed
    assert (counts.succeeded_essay_count, counts.failed_essay_count) == (19, 1)


async def test_an_unsatisfied_step_skips_its_dependants_and_fails_the_run(
    batches: RunningBatch,
) -> None:
    batch = await batches.client.create_batch([f"Essay {i}." for i in range(10)], flags=PROMPT)
    bad = {batch.essays[0].essay_id, batch.essays[1].essay_id}  # 8/10 < 0.9
    worker = Worker(batches.bus, lambda step, essay: essay not in bad)
    await batches.client.start_pipeline(batch.batch_id, "ai_feedback")
    run = await _run_to_end(batches, batch.batch_id, worker)
    assert run.status == pb.RUN_STATUS_FAILED
    assert [(s.step, s.status) for s in run.steps] == [
        ("spellcheck", pb.RUN_STEP_STATUS_UNSATISFIED),
        ("nlp", pb.RUN_STEP_STATUS_SKIPPED_DUE_TO_DEPENDENCY_FAILURE),
        ("ai_feedback", pb.RUN_STEP_STATUS_SKIPPED_DUE_TO_DEPENDENCY_FAILURE),
    ]
    assert [c.step for c in step_commands(batches.bus)] == ["spellcheck"]
    [done] = events_of(batches.bus, EventKind.PIPELINE_RUN_COMPLETED)
    assert done.pipeline_run_completed.outcome == ev.RUN_OUTCOME_FAILED
    assert done.pipeline_run_completed.failed_essay_count == 2

    # Outcomes count once per essay, so the unsatisfied step cannot run again: a new start
    # that needs it is refused up front instead of waiting forever for a completion.
    again = await _failure(batches.client.start_pipeline(batch.batch_id, "nlp"))
    assert again.code == grpc.StatusCode.FAILED_PRECONDITION
    failure = again.detail(details.PreconditionFailure)
    assert isinstance(failure, details.PreconditionFailure)
    assert [(v.type, v.subject) for v in failure.violations] == [("STEP", "spellcheck")]
    assert "completed unsatisfied (8 of 10" in failure.violations[0].description
    assert [c.step for c in step_commands(batches.bus)] == ["spellcheck"]  # nothing dispatched


async def test_duplicated_outcomes_never_dispatch_a_step_twice(batches: RunningBatch) -> None:
    batch = await batches.client.create_batch([f"Essay {i}." for i in range(6)], flags=PROMPT)
    await batches.client.start_pipeline(batch.batch_id, "comprehensive")
    run = await _run_to_end(batches, batch.batch_id, Worker(batches.bus, duplicate=True))
    assert run.status == pb.RUN_STATUS_COMPLETED
    steps = [c.step for c in step_commands(batches.bus)]
    assert sorted(steps) == sorted(["spellcheck", "cj_assessment", "nlp", "ai_feedback"])
    assert len(events_of(batches.bus, EventKind.PIPELINE_RUN_COMPLETED)) == 1


async def test_a_second_pipeline_prunes_what_the_batch_already_satisfied(
    batches: RunningBatch,
) -> None:
    batch = await batches.client.create_batch(["One.", "Two."], flags=PROMPT)
    worker = Worker(batches.bus)
    await batches.client.start_pipeline(batch.batch_id, "nlp")
    await _run_to_end(batches, batch.batch_id, worker)
    # spellcheck produces text, nlp a result: the latest text is spellcheck's output
    status = await batches.client.get_batch_status(batch.batch_id)
    assert {e.current_storage_id for e in status.batch.essays} == {
        f"spellcheck-out-{e.essay_id}" for e in batch.essays
    }
    second = await batches.client.start_pipeline(batch.batch_id, "cj_assessment")
    assert list(second.steps) == ["cj_assessment"]
    assert list(second.pruned_steps) == ["spellcheck"]
    assert list(second.pruned_reasons) == [ev.SKIP_REASON_ALREADY_SATISFIED]
    assert [(s.step, s.status) for s in second.run.steps] == [
        ("spellcheck", pb.RUN_STEP_STATUS_SKIPPED_ALREADY_SATISFIED),
        ("cj_assessment", pb.RUN_STEP_STATUS_DISPATCHED),
    ]
    skipped = [e.phase_skipped for e in events_of(batches.bus, EventKind.PHASE_SKIPPED)]
    assert [(p.batch_id, p.step) for p in skipped] == [(batch.batch_id, "spellcheck")]
    cj = step_commands(batches.bus)[-1]
    assert cj.step == "cj_assessment"
    # the latest text is the output of the last step that produces text (here: spellcheck)
    assert {e.text_storage_id for e in cj.essays} == {
        f"spellcheck-out-{e.essay_id}" for e in batch.essays
    }


async def test_a_resolved_plan_carries_each_step_s_timeout_and_whether_it_produces_text(
    conductor: RunningConductor,
) -> None:
    adapter = Conductor(conductor.client)
    essays = (Essay("e1", "", "text-1", "text-1"),)
    batch = Batch("b-plan", essays, BatchMetadata(flags=PROMPT), datetime.now(UTC))
    await adapter.register(batch)
    resolution = await adapter.resolve(batch, "nlp")
    assert [(p.name, p.timeout, p.produces_text) for p in resolution.steps] == [
        ("spellcheck", 900.0, True),
        ("nlp", 1800.0, False),
    ]


async def test_a_run_with_every_step_pruned_completes_at_once(batches: RunningBatch) -> None:
    batch = await batches.client.create_batch(["One."])
    worker = Worker(batches.bus)
    await batches.client.start_pipeline(batch.batch_id, "spellcheck")
    await _run_to_end(batches, batch.batch_id, worker)
    again = await batches.client.start_pipeline(batch.batch_id, "spellcheck")
    assert list(again.steps) == []
    assert list(again.pruned_steps) == ["spellcheck"]
    assert again.run.status == pb.RUN_STATUS_COMPLETED
    assert again.run.HasField("finished_at")
    assert len(events_of(batches.bus, EventKind.PIPELINE_RUN_COMPLETED)) == 2


async def test_start_pipeline_is_idempotent_by_request_id(batches: RunningBatch) -> None:
    batch = await batches.client.create_batch(["One."])
    first = await batches.client.start_pipeline(batch.batch_id, "spellcheck", request_id="go")
    again = await batches.client.start_pipeline(batch.batch_id, "spellcheck", request_id="go")
    assert again.run.run_id == first.run.run_id
    assert len(step_commands(batches.bus)) == 1
    error = await _failure(batches.client.start_pipeline(batch.batch_id, "nlp", request_id="go"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "REQUEST_ID_REUSED"


async def test_concurrent_starts_give_one_run_and_aborted_for_the_others(
    batches: RunningBatch,
) -> None:
    batch = await batches.client.create_batch(["One.", "Two."])
    results = await asyncio.gather(
        *(batches.client.start_pipeline(batch.batch_id, "spellcheck") for _ in range(6)),
        return_exceptions=True,
    )
    started = [r for r in results if isinstance(r, pb.StartPipelineResponse)]
    refused = [r for r in results if isinstance(r, RpcError)]
    assert len(started) == 1
    assert len(refused) == 5
    run_id = started[0].run.run_id
    for error in refused:
        assert error.code == grpc.StatusCode.ABORTED
        assert error.reason == "ACTIVE_RUN_EXISTS"
        info = error.detail(details.ResourceInfo)
        assert isinstance(info, details.ResourceInfo)
        assert (info.resource_type, info.resource_name) == ("pipeline_run", run_id)
    assert len((await batches.client.get_batch_status(batch.batch_id)).runs) == 1
    assert len(step_commands(batches.bus)) == 1


async def test_start_pipeline_error_paths(batches: RunningBatch) -> None:
    batch = await batches.client.create_batch(["One."])  # no prompt_attached flag
    unknown_batch = await _failure(batches.client.start_pipeline("nope", "spellcheck"))
    assert unknown_batch.code == grpc.StatusCode.NOT_FOUND
    info = unknown_batch.detail(details.ResourceInfo)
    assert isinstance(info, details.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("batch", "nope")

    unknown_pipeline = await _failure(batches.client.start_pipeline(batch.batch_id, "spelchek"))
    assert unknown_pipeline.code == grpc.StatusCode.NOT_FOUND
    info = unknown_pipeline.detail(details.ResourceInfo)
    assert isinstance(info, details.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("pipeline", "spelchek")

    gated = await _failure(batches.client.start_pipeline(batch.batch_id, "nlp"))
    assert gated.code == grpc.StatusCode.FAILED_PRECONDITION
    failure = gated.detail(details.PreconditionFailure)
    assert isinstance(failure, details.PreconditionFailure)
    assert [(v.type, v.subject) for v in failure.violations] == [("FLAG", "prompt_attached")]

    bad = await _failure(batches.client.start_pipeline("", "has space"))
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    request = bad.detail(details.BadRequest)
    assert isinstance(request, details.BadRequest)
    assert {v.field for v in request.field_violations} == {"batch_id", "pipeline"}
    assert (await batches.client.get_batch_status(batch.batch_id)).runs == []


async def test_start_pipeline_with_the_conductor_down_is_unavailable() -> None:
    settings = ConductorSettings(
        server=ServerSettings(host="127.0.0.1", grpc_port=0, metrics_port=0, uvloop=False),
        backends=BackendSettings(),
    )
    bus, stop = MemoryBus(), asyncio.Event()
    ready: asyncio.Future[GrpcServer] = asyncio.get_running_loop().create_future()
    conductor = asyncio.create_task(serve_conductor(settings, stop, bus, ready.set_result))
    address = f"127.0.0.1:{(await asyncio.wait_for(ready, 30)).port}"
    async with batch_service(settings_for(address), bus) as batches:
        batch = await batches.client.create_batch(["One."])
        stop.set()
        await asyncio.wait_for(conductor, 30)
        error = await _failure(batches.client.start_pipeline(batch.batch_id, "spellcheck"))
        assert error.code == grpc.StatusCode.UNAVAILABLE
        info = error.detail(details.ResourceInfo)
        assert isinstance(info, details.ResourceInfo)
        assert info.resource_name == "conductor"
        assert list((await batches.client.get_batch_status(batch.batch_id)).runs) == []
        assert step_commands(bus) == []


# --- GetBatchStatus and ListBatches -------------------------------------------------------


async def test_get_batch_status_of_an_unknown_batch_is_not_found(batches: RunningBatch) -> None:
    error = await _failure(batches.client.get_batch_status("missing"))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "BATCH_NOT_FOUND"
    bad = await _failure(batches.client.get_batch_status(""))
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_batch_status_lists_runs_newest_first(batches: RunningBatch) -> None:
    batch = await batches.client.create_batch(["One."], flags=PROMPT)
    worker = Worker(batches.bus)
    first = await batches.client.start_pipeline(batch.batch_id, "spellcheck")
    await _run_to_end(batches, batch.batch_id, worker)
    second = await batches.client.start_pipeline(batch.batch_id, "nlp")
    status = await batches.client.get_batch_status(batch.batch_id)
    assert [r.run_id for r in status.runs] == [second.run.run_id, first.run.run_id]


async def test_list_batches_pages_newest_first(batches: RunningBatch) -> None:
    created = [(await batches.client.create_batch([f"E{i}."], name=f"b{i}")) for i in range(7)]
    await batches.client.start_pipeline(created[-1].batch_id, "spellcheck")
    pages: list[list[str]] = []
    token = ""
    while True:
        page = await batches.client.list_batches(page_size=3, page_token=token)
        pages.append([b.batch_id for b in page.batches])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [b for p in pages for b in p] == [b.batch_id for b in reversed(created)]
    first = (await batches.client.list_batches(page_size=1)).batches[0]
    assert (first.name, first.essay_count) == ("b6", 1)
    assert first.latest_run_status == pb.RUN_STATUS_RUNNING
    assert len((await batches.client.list_batches()).batches) == 7  # default page size 50


@pytest.mark.parametrize(
    ("size", "token", "field"),
    [(501, "", "page_size"), (-1, "", "page_size"), (0, "garbage!", "page_token")],
)
async def test_list_batches_rejects_bad_paging(
    batches: RunningBatch, size: int, token: str, field: str
) -> None:
    error = await _failure(batches.client.list_batches(page_size=size, page_token=token))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    bad = error.detail(details.BadRequest)
    assert isinstance(bad, details.BadRequest)
    assert [v.field for v in bad.field_violations] == [field]


# --- WatchBatch ---------------------------------------------------------------------------


async def test_watch_streams_every_transition_in_order_until_the_run_ends(
    batches: RunningBatch,
) -> None:
    batch = await batches.client.create_batch([f"Essay {i}." for i in range(4)], flags=PROMPT)
    started = await batches.client.start_pipeline(batch.batch_id, "ai_feedback")
    updates: list[pb.WatchBatchResponse] = []

    async def watch() -> None:
        async for update in batches.client.watch_batch(batch.batch_id, timeout=30):
            updates.append(update)

    watcher = asyncio.create_task(watch())
    await eventually(lambda: bool(updates), what="the first update")
    worker = Worker(batches.bus)

    async def watch_ended() -> bool:
        return watcher.done()

    await worker.until(watch_ended)
    await watcher
    assert [u.sequence for u in updates] == list(range(1, len(updates) + 1))
    assert updates[0].changed_step == ""
    assert updates[0].run.run_id == started.run.run_id
    changes = [
        (u.changed_step, next(s.status for s in u.run.steps if s.step == u.changed_step))
        for u in updates[1:]
    ]
    assert changes == [
        ("spellcheck", pb.RUN_STEP_STATUS_SATISFIED),
        ("nlp", pb.RUN_STEP_STATUS_DISPATCHED),
        ("nlp", pb.RUN_STEP_STATUS_SATISFIED),
        ("ai_feedback", pb.RUN_STEP_STATUS_DISPATCHED),
        ("ai_feedback", pb.RUN_STEP_STATUS_SATISFIED),
    ]
    assert [u.run.status for u in updates[1:]] == [pb.RUN_STATUS_RUNNING] * 4 + [
        pb.RUN_STATUS_COMPLETED
    ]
    final = await _run_of(batches, batch.batch_id)
    assert updates[-1].run == final


async def test_watching_a_finished_run_sends_its_state_and_ends(batches: RunningBatch) -> None:
    batch = await batches.client.create_batch(["One."])
    await batches.client.start_pipeline(batch.batch_id, "spellcheck")
    run = await _run_to_end(batches, batch.batch_id, Worker(batches.bus))
    updates = [u async for u in batches.client.watch_batch(batch.batch_id, run.run_id, timeout=10)]
    assert len(updates) == 1
    assert updates[0].run == run


async def test_watch_error_paths(batches: RunningBatch) -> None:
    batch = await batches.client.create_batch(["One."])
    for batch_id, run_id, code, kind in [
        ("missing", "", grpc.StatusCode.NOT_FOUND, "batch"),
        (batch.batch_id, "", grpc.StatusCode.NOT_FOUND, "pipeline_run"),
        (batch.batch_id, "no-such-run", grpc.StatusCode.NOT_FOUND, "pipeline_run"),
    ]:
        with pytest.raises(RpcError) as caught:
            async for _ in batches.client.watch_batch(batch_id, run_id, timeout=10):
                pass
        assert caught.value.code == code
        info = caught.value.detail(details.ResourceInfo)
        assert isinstance(info, details.ResourceInfo)
        assert info.resource_type == kind
    with pytest.raises(RpcError) as invalid:
        async for _ in batches.client.watch_batch("", timeout=10):
            pass
    assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_open_watch_streams_end_unavailable_when_the_server_stops(
    conductor: RunningConductor,
) -> None:
    stop = asyncio.Event()
    ready: asyncio.Future[GrpcServer] = asyncio.get_running_loop().create_future()
    settings = settings_for(conductor.address)
    server = asyncio.create_task(serve_batch(settings, stop, conductor.bus, ready.set_result))
    port = (await asyncio.wait_for(ready, 30)).port
    async with BatchClient(f"127.0.0.1:{port}") as client:
        batch = await client.create_batch(["One."])
        await client.start_pipeline(batch.batch_id, "spellcheck")
        stream = client.watch_batch(batch.batch_id, timeout=30, resume_for=0)  # no resuming
        first = await anext(stream)
        assert first.run.status == pb.RUN_STATUS_RUNNING
        stop.set()
        with pytest.raises(RpcError) as caught:
            await anext(stream)
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    await asyncio.wait_for(server, 30)
