"""GetEssay and ListEssays over a real gRPC server (embedded mode) and a real embedded conductor.

The workers are played by ``Worker`` with the BatchService's content store: a step's output is a
real text there (the essay's text with `` [<step>]`` appended), as a real worker stores its
corrected text in the Content Service.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2 as details

from batch_server.content.memory import MemoryContentStore
from batch_server.domain.essays import PAGE_TEXT_BYTES
from bench.harness.ports import free_port
from clients import RpcError
from clients.enums import EssayView
from conductor_server.settings import ConductorSettings
from generated.huleedu.batch.v1 import batch_pb2 as pb
from generated.huleedu.events.v1 import events_pb2 as ev
from mesh.events.memory import MemoryBus
from mesh.settings import BackendSettings, ServerSettings
from tests.service.conftest import RunningConductor, conductor_service
from tests.support.batch import RunningBatch, Worker, batch_service, settings_for
from tests.support.polling import eventually

PROMPT = {"prompt_attached": True}


@pytest.fixture
def content() -> MemoryContentStore:
    return MemoryContentStore()


@pytest.fixture
async def batches(
    conductor: RunningConductor, content: MemoryContentStore
) -> AsyncIterator[RunningBatch]:
    settings = settings_for(conductor.address)
    async with batch_service(settings, conductor.bus, content) as running:
        yield running


async def _failure(call: object) -> RpcError:
    with pytest.raises(RpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


def _fields(error: RpcError) -> list[str]:
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    bad = error.detail(details.BadRequest)
    assert isinstance(bad, details.BadRequest)
    return [v.field for v in bad.field_violations]


async def _run(batches: RunningBatch, batch_id: str, pipeline: str, worker: Worker) -> None:
    """Start ``pipeline`` on the batch and answer its commands until the run has ended."""
    await batches.client.start_pipeline(batch_id, pipeline)

    async def ended() -> bool:
        run = (await batches.client.get_batch_status(batch_id)).runs[0]
        return run.status not in (pb.RUN_STATUS_PENDING, pb.RUN_STATUS_RUNNING)

    await worker.until(ended)


async def _all_pages(
    batches: RunningBatch, batch_id: str, size: int, view: EssayView
) -> list[pb.ListEssaysResponse]:
    pages = [await batches.client.list_essays(batch_id, size, "", view)]
    while pages[-1].next_page_token:
        token = pages[-1].next_page_token
        pages.append(await batches.client.list_essays(batch_id, size, token, view))
    return pages


async def _outcome_reads(conductor: RunningConductor) -> float:
    """GetEssayOutcomes calls the conductor has answered, from its ``/metrics``."""
    port = conductor.server.metrics_port
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    handled = re.compile(
        r'grpc_server_handled_total\{(?=[^}]*grpc_method="GetEssayOutcomes")[^}]*\} (\S+)'
    )
    return sum(float(found) for found in handled.findall(text))


# --- GetEssay ----------------------------------------------------------------------------


async def test_an_essay_after_a_run_has_its_texts_and_step_results(
    batches: RunningBatch, content: MemoryContentStore
) -> None:
    texts = [f"Teh essay number {i}." for i in range(10)]
    batch = await batches.client.create_batch(texts, flags=PROMPT)
    unlucky = batch.essays[9].essay_id
    worker = Worker(
        batches.bus,
        lambda step, essay: not (step == "spellcheck" and essay == unlucky),
        content=content,
    )
    await _run(batches, batch.batch_id, "nlp", worker)
    run_id = (await batches.client.get_batch_status(batch.batch_id)).runs[0].run_id

    first = await batches.client.get_essay(batch.essays[0].essay_id)  # FULL by default
    assert (first.batch_id, first.client_ref) == (batch.batch_id, "essay-0")
    assert first.original_storage_id == batch.essays[0].original_storage_id
    assert first.original_text == texts[0]
    assert [(s.step, s.outcome, s.run_id, s.attempt) for s in first.steps] == [
        ("spellcheck", ev.STEP_OUTCOME_SUCCEEDED, run_id, 1),
        ("nlp", ev.STEP_OUTCOME_SUCCEEDED, run_id, 1),
    ]
    spellchecked = first.steps[0].output_storage_id
    assert await content.get(spellchecked) == f"{texts[0]} [spellcheck]"
    assert first.current_storage_id in {s.output_storage_id for s in first.steps}
    assert first.current_text == await content.get(first.current_storage_id)
    assert first.current_text.startswith(f"{texts[0]} [spellcheck]")
    assert not first.steps[0].HasField("error")

    failed = await batches.client.get_essay(unlucky, batch_id=batch.batch_id)
    [result] = failed.steps  # its nlp was never dispatched
    assert (result.step, result.outcome, result.output_storage_id) == (
        "spellcheck",
        ev.STEP_OUTCOME_FAILED,
        "",
    )
    assert (result.error.code, result.error.message) == (
        "TEST_FAILURE",
        "the test failed spellcheck",
    )
    assert failed.current_storage_id == failed.original_storage_id
    assert failed.current_text == failed.original_text == texts[9]


async def test_the_basic_view_has_no_texts(batches: RunningBatch) -> None:
    batch = await batches.client.create_batch(["One essay."])
    await _run(batches, batch.batch_id, "spellcheck", Worker(batches.bus))
    essay_id = batch.essays[0].essay_id
    basic = await batches.client.get_essay(essay_id, view=EssayView.BASIC)
    assert (basic.original_text, basic.current_text) == ("", "")
    assert basic.current_storage_id == f"spellcheck-out-{essay_id}"
    assert [s.step for s in basic.steps] == ["spellcheck"]
    [listed] = (await batches.client.list_essays(batch.batch_id)).essays  # BASIC by default
    assert listed == basic


async def test_an_essay_of_trigger_spellcheck_has_no_batch_and_no_steps(
    batches: RunningBatch,
) -> None:
    triggered = await batches.client.trigger_spellcheck("Teh lone essay.", language="sv")
    essay = await batches.client.get_essay(triggered.essay_id)
    assert essay == pb.EssayDetail(
        essay_id=triggered.essay_id,
        original_storage_id=triggered.text_storage_id,
        current_storage_id=triggered.text_storage_id,
        original_text="Teh lone essay.",
        current_text="Teh lone essay.",
    )
    batch = await batches.client.create_batch(["An essay of a batch."])
    error = await _failure(batches.client.get_essay(triggered.essay_id, batch_id=batch.batch_id))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "ESSAY_NOT_FOUND")


async def test_an_unknown_essay_or_one_of_another_batch_is_not_found(
    batches: RunningBatch,
) -> None:
    first = await batches.client.create_batch(["One."])
    second = await batches.client.create_batch(["Two."])
    essay_id = first.essays[0].essay_id
    for call in (
        batches.client.get_essay("no-such-essay"),
        batches.client.get_essay(essay_id, batch_id=second.batch_id),
        batches.client.get_essay(essay_id, batch_id="no-such-batch"),
    ):
        error = await _failure(call)
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "ESSAY_NOT_FOUND")
        info = error.detail(details.ResourceInfo)
        assert isinstance(info, details.ResourceInfo)
        assert info.resource_type == "essay"
    assert (await batches.client.get_essay(essay_id, batch_id=first.batch_id)).essay_id == essay_id


async def test_get_essay_names_every_bad_field(batches: RunningBatch) -> None:
    request = pb.GetEssayRequest(essay_id="", batch_id="a batch", view=7)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await batches.client.stub.GetEssay(request)
    assert _fields(RpcError.from_aio(caught.value)) == ["essay_id", "batch_id", "view"]


async def test_an_essay_the_conductor_lost_has_no_steps_and_a_conductor_down_is_unavailable(
    content: MemoryContentStore,
) -> None:
    port, bus = free_port(), MemoryBus()
    settings = ConductorSettings(
        server=ServerSettings(host="127.0.0.1", grpc_port=port, metrics_port=0, uvloop=False),
        backends=BackendSettings(),
    )
    async with batch_service(settings_for(f"127.0.0.1:{port}"), bus, content) as batches:
        async with conductor_service(settings, bus):
            batch = await batches.client.create_batch(["One.", "Two."])
            await _run(batches, batch.batch_id, "spellcheck", Worker(bus, content=content))
            essay_id = batch.essays[0].essay_id
            assert len((await batches.client.get_essay(essay_id)).steps) == 1
        error = await _failure(batches.client.get_essay(essay_id, timeout=20))
        assert error.code == grpc.StatusCode.UNAVAILABLE
        info = error.detail(details.ResourceInfo)
        assert isinstance(info, details.ResourceInfo)
        assert info.resource_name == "conductor"
        async with conductor_service(settings, MemoryBus()):  # a new one that knows nothing

            async def read() -> bool:  # once the BatchService's channel has reconnected
                lost = await batches.client.get_essay(essay_id)
                assert (list(lost.steps), lost.original_text) == ([], "One.")
                return True

            await eventually(read, 30, (RpcError,), what="GetEssay through the new conductor")
            listed = await batches.client.list_essays(batch.batch_id)
            assert [list(e.steps) for e in listed.essays] == [[], []]


# --- ListEssays --------------------------------------------------------------------------


async def test_essays_are_listed_in_batch_order_with_one_conductor_call_a_page(
    batches: RunningBatch, conductor: RunningConductor, content: MemoryContentStore
) -> None:
    texts = [f"Essay {i}." for i in range(250)]
    batch = await batches.client.create_batch(texts)
    await _run(batches, batch.batch_id, "spellcheck", Worker(batches.bus, content=content))
    before = await _outcome_reads(conductor)
    pages = await _all_pages(batches, batch.batch_id, 100, EssayView.BASIC)
    assert await _outcome_reads(conductor) - before == 3
    assert [len(p.essays) for p in pages] == [100, 100, 50]
    listed = [e for p in pages for e in p.essays]
    assert [e.essay_id for e in listed] == [e.essay_id for e in batch.essays]
    assert [e.client_ref for e in listed] == [f"essay-{i}" for i in range(250)]
    assert {e.batch_id for e in listed} == {batch.batch_id}
    assert all([s.step for s in e.steps] == ["spellcheck"] for e in listed)
    assert all(e.original_text == "" for e in listed)
    default = await batches.client.list_essays(batch.batch_id, page_size=0)
    assert len(default.essays) == 100
    [full] = await _all_pages(batches, batch.batch_id, 1000, EssayView.FULL)
    assert [e.original_text for e in full.essays] == texts
    assert [e.current_text for e in full.essays] == [f"{t} [spellcheck]" for t in texts]


async def test_a_full_page_ends_before_its_texts_pass_the_budget(
    batches: RunningBatch, content: MemoryContentStore
) -> None:
    size = 300 * 1024
    texts = [chr(ord("a") + i) * size for i in range(7)]
    batch = await batches.client.create_batch(texts, timeout=30)
    last = batch.essays[6].essay_id
    worker = Worker(batches.bus, lambda step, essay: essay != last, content=content)
    await _run(batches, batch.batch_id, "spellcheck", worker)
    pages = await _all_pages(batches, batch.batch_id, 100, EssayView.FULL)
    # each essay's texts: 300 KiB and 300 KiB + " [spellcheck]"; the last essay failed, so its
    # latest text is its original
    assert [len(p.essays) for p in pages] == [3, 3, 1]
    for page in pages:
        used = sum(len(e.original_text) + len(e.current_text) for e in page.essays)
        assert used <= PAGE_TEXT_BYTES
    listed = [e for p in pages for e in p.essays]
    assert [e.original_text for e in listed] == texts
    assert [e.current_text for e in listed] == [f"{t} [spellcheck]" for t in texts[:6]] + [texts[6]]
    small = await batches.client.list_essays(batch.batch_id, 2, "", EssayView.FULL)
    assert len(small.essays) == 2  # the page size comes first when it is smaller


async def test_a_page_token_is_only_good_for_its_batch(batches: RunningBatch) -> None:
    first = await batches.client.create_batch(["One.", "Two."])
    second = await batches.client.create_batch(["Three.", "Four."])
    page = await batches.client.list_essays(first.batch_id, page_size=1)
    assert page.next_page_token
    error = await _failure(batches.client.list_essays(second.batch_id, 1, page.next_page_token))
    assert _fields(error) == ["page_token"]
    listing = await batches.client.list_batches(page_size=1)
    foreign = await _failure(batches.client.list_essays(first.batch_id, 1, listing.next_page_token))
    assert _fields(foreign) == ["page_token"]
    rest = await batches.client.list_essays(first.batch_id, 1, page.next_page_token)
    assert [e.essay_id for e in rest.essays] == [first.essays[1].essay_id]
    assert rest.next_page_token == ""


async def test_list_essays_of_an_unknown_batch_is_not_found(batches: RunningBatch) -> None:
    error = await _failure(batches.client.list_essays("no-such-batch"))
    assert error.code == grpc.StatusCode.NOT_FOUND
    info = error.detail(details.ResourceInfo)
    assert isinstance(info, details.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("batch", "no-such-batch")


async def test_list_essays_names_every_bad_field(batches: RunningBatch) -> None:
    request = pb.ListEssaysRequest(
        batch_id="",
        page_size=1001,
        page_token="garbage!",
        view=9,  # type: ignore[arg-type]
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await batches.client.stub.ListEssays(request)
    assert _fields(RpcError.from_aio(caught.value)) == [
        "batch_id",
        "page_size",
        "page_token",
        "view",
    ]
    for size in (-1, 1001):
        error = await _failure(batches.client.list_essays("b", page_size=size))
        assert _fields(error) == ["page_size"]
