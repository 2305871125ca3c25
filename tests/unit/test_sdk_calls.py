"""What the Python SDK's methods send, and which of them it retries, against an in-process server.

A fake servicer records every request and answers UNAVAILABLE for the first ``failures`` calls
of each method, as a server draining for a deploy does; the SDK's channel is the real one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from clients import BatchClient, ConductorClient, EssayView, OutcomeVerdict, RpcError, RunStatus
from generated.huleedu.batch.v1 import batch_pb2 as pb
from generated.huleedu.batch.v1 import batch_pb2_grpc
from generated.huleedu.conductor.v1 import conductor_pb2 as cpb
from generated.huleedu.conductor.v1 import conductor_pb2_grpc
from tests.support.net import serving


class Recorder:
    """Requests by method; UNAVAILABLE for each method's first ``failures`` calls."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.requests: dict[str, list[Any]] = defaultdict(list)

    async def record(self, method: str, request: Any, context: Any) -> None:
        self.requests[method].append(request)
        if len(self.requests[method]) <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")


class FakeBatch(batch_pb2_grpc.BatchServiceServicer, Recorder):
    async def TriggerSpellcheck(self, request: Any, context: Any) -> pb.TriggerSpellcheckResponse:
        await self.record("TriggerSpellcheck", request, context)
        return pb.TriggerSpellcheckResponse(essay_id="e-1")

    async def CreateBatch(self, request: Any, context: Any) -> pb.CreateBatchResponse:
        await self.record("CreateBatch", request, context)
        return pb.CreateBatchResponse(batch=pb.Batch(batch_id="b-1"))

    async def CancelRun(self, request: Any, context: Any) -> pb.CancelRunResponse:
        await self.record("CancelRun", request, context)
        run = pb.PipelineRun(run_id=request.run_id, status=pb.RUN_STATUS_CANCELLED)
        run.cancel_reason = request.reason
        return pb.CancelRunResponse(run=run)

    async def RetryRun(self, request: Any, context: Any) -> pb.RetryRunResponse:
        await self.record("RetryRun", request, context)
        run = pb.PipelineRun(run_id=request.run_id, status=pb.RUN_STATUS_RUNNING, attempt=2)
        return pb.RetryRunResponse(run=run)

    async def UpdateBatch(self, request: Any, context: Any) -> pb.UpdateBatchResponse:
        await self.record("UpdateBatch", request, context)
        return pb.UpdateBatchResponse(batch=pb.Batch(batch_id=request.batch_id))

    async def ListBatches(self, request: Any, context: Any) -> pb.ListBatchesResponse:
        await self.record("ListBatches", request, context)
        return pb.ListBatchesResponse()

    async def GetEssay(self, request: Any, context: Any) -> pb.GetEssayResponse:
        await self.record("GetEssay", request, context)
        return pb.GetEssayResponse(essay=pb.EssayDetail(essay_id=request.essay_id))

    async def ListEssays(self, request: Any, context: Any) -> pb.ListEssaysResponse:
        await self.record("ListEssays", request, context)
        start = int(request.page_token or 0)
        ids = [f"e-{n}" for n in range(start, min(start + request.page_size, 5))]
        token = str(start + request.page_size) if start + request.page_size < 5 else ""
        essays = [pb.EssayDetail(essay_id=essay_id) for essay_id in ids]
        return pb.ListEssaysResponse(essays=essays, next_page_token=token)


class FakeConductor(conductor_pb2_grpc.PipelineConductorServiceServicer, Recorder):
    async def ReopenEssays(self, request: Any, context: Any) -> cpb.ReopenEssaysResponse:
        await self.record("ReopenEssays", request, context)
        return cpb.ReopenEssaysResponse(
            steps=[cpb.ReopenedStep(step=s, essay_ids=["e-1"]) for s in request.steps]
        )

    async def ExpireStep(self, request: Any, context: Any) -> cpb.ExpireStepResponse:
        await self.record("ExpireStep", request, context)
        return cpb.ExpireStepResponse(timed_out_essay_ids=["e-2"])

    async def GetEssayOutcomes(self, request: Any, context: Any) -> cpb.GetEssayOutcomesResponse:
        await self.record("GetEssayOutcomes", request, context)
        essays = [cpb.EssayOutcomes(essay_id=e) for e in request.essay_ids]
        return cpb.GetEssayOutcomesResponse(batch_id=request.batch_id, essays=essays)

    async def RecordStepOutcome(self, request: Any, context: Any) -> cpb.RecordStepOutcomeResponse:
        await self.record("RecordStepOutcome", request, context)
        return cpb.RecordStepOutcomeResponse(verdict=cpb.OUTCOME_VERDICT_SUPERSEDED)

    async def ResolvePipeline(self, request: Any, context: Any) -> cpb.ResolvePipelineResponse:
        await self.record("ResolvePipeline", request, context)
        return cpb.ResolvePipelineResponse()


@pytest.fixture
def batch_fake() -> FakeBatch:
    return FakeBatch()  # type: ignore[abstract]  # serves the methods under test


@pytest.fixture
async def batches(batch_fake: FakeBatch) -> AsyncIterator[BatchClient]:
    add = batch_pb2_grpc.add_BatchServiceServicer_to_server
    async with serving(lambda s: add(batch_fake, s)) as target, BatchClient(target, 5) as client:
        yield client


@pytest.fixture
def conductor_fake() -> FakeConductor:
    return FakeConductor()  # type: ignore[abstract]  # serves the methods under test


@pytest.fixture
async def conductor(conductor_fake: FakeConductor) -> AsyncIterator[ConductorClient]:
    add = conductor_pb2_grpc.add_PipelineConductorServiceServicer_to_server
    async with (
        serving(lambda s: add(conductor_fake, s)) as target,
        ConductorClient(target, 5) as client,
    ):
        yield client


async def test_update_batch_masks_exactly_the_fields_given(
    batches: BatchClient, batch_fake: FakeBatch
) -> None:
    await batches.update_batch("b-1", flags={"prompt_attached": True})
    await batches.update_batch("b-1", name="", labels={"term": "ht25"})
    first, second = batch_fake.requests["UpdateBatch"]
    assert list(first.update_mask.paths) == ["flags"]
    assert dict(first.metadata.flags) == {"prompt_attached": True}
    assert list(second.update_mask.paths) == ["labels", "name"]  # "" clears the name
    assert dict(second.metadata.labels) == {"term": "ht25"}
    with pytest.raises(ValueError, match="at least one"):
        await batches.update_batch("b-1")
    assert len(batch_fake.requests["UpdateBatch"]) == 2


async def test_retry_run_retried_after_unavailable_carries_one_request_id(
    batches: BatchClient, batch_fake: FakeBatch
) -> None:
    batch_fake.failures = 2
    response = await batches.retry_run("b-1", "r-1", steps=["nlp"])
    assert response.run.attempt == 2
    attempts = batch_fake.requests["RetryRun"]
    assert len(attempts) == 3  # two UNAVAILABLE, then the answer
    assert {a.request_id for a in attempts} == {attempts[0].request_id}
    assert attempts[0].request_id.startswith("py-")
    assert list(attempts[0].steps) == ["nlp"]
    await batches.retry_run("b-1", "r-1")
    await batches.retry_run("b-1", "r-1", request_id="mine")
    later = [a.request_id for a in batch_fake.requests["RetryRun"][3:]]
    assert later[0] not in {attempts[0].request_id, ""}  # each call its own
    assert later[1] == "mine"


async def test_create_batch_gets_a_request_id_when_the_caller_gives_none(
    batches: BatchClient, batch_fake: FakeBatch
) -> None:
    batch_fake.failures = 1
    await batches.create_batch(["One essay."])
    first, retried = batch_fake.requests["CreateBatch"]
    assert first.request_id
    assert first.request_id == retried.request_id


async def test_cancel_run_is_retried_and_trigger_spellcheck_is_not(
    batches: BatchClient, batch_fake: FakeBatch
) -> None:
    batch_fake.failures = 1
    run = await batches.cancel_run("b-1", "r-1", reason="wrong prompt")
    assert (RunStatus(run.status), run.cancel_reason) == (RunStatus.CANCELLED, "wrong prompt")
    assert len(batch_fake.requests["CancelRun"]) == 2
    with pytest.raises(RpcError) as raised:
        await batches.trigger_spellcheck("Teh text.")
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert len(batch_fake.requests["TriggerSpellcheck"]) == 1  # a repeat would store it twice


async def test_list_batches_sends_its_filters(batches: BatchClient, batch_fake: FakeBatch) -> None:
    after = datetime(2025, 9, 1, tzinfo=UTC)
    await batches.list_batches(
        10,
        statuses=[RunStatus.FAILED, RunStatus.CANCELLED],
        labels={"course": "ENG5"},
        created_after=after,
    )
    [request] = batch_fake.requests["ListBatches"]
    assert list(request.latest_run_statuses) == [pb.RUN_STATUS_FAILED, pb.RUN_STATUS_CANCELLED]
    assert dict(request.labels) == {"course": "ENG5"}
    assert request.created_after.ToDatetime(UTC) == after
    assert not request.HasField("created_before")


async def test_essays_read_one_and_every_page(batches: BatchClient, batch_fake: FakeBatch) -> None:
    essay = await batches.get_essay("e-3", batch_id="b-1")
    assert essay.essay_id == "e-3"
    [request] = batch_fake.requests["GetEssay"]
    assert (request.batch_id, request.view) == ("b-1", pb.ESSAY_VIEW_FULL)
    ids = [e.essay_id async for e in batches.iter_essays("b-1", page_size=2)]
    assert ids == ["e-0", "e-1", "e-2", "e-3", "e-4"]
    tokens = [r.page_token for r in batch_fake.requests["ListEssays"]]
    assert tokens == ["", "2", "4"]
    assert {r.view for r in batch_fake.requests["ListEssays"]} == {EssayView.BASIC}


async def test_the_conductors_run_control_calls(
    conductor: ConductorClient, conductor_fake: FakeConductor
) -> None:
    conductor_fake.failures = 1  # each is idempotent: retried
    reopened = await conductor.reopen_essays("b-1", "r-1", 2, ["spellcheck", "nlp"])
    assert [s.step for s in reopened.steps] == ["spellcheck", "nlp"]
    expired = await conductor.expire_step("b-1", "nlp", "r-1", attempt=2)
    assert list(expired.timed_out_essay_ids) == ["e-2"]
    outcomes = await conductor.get_essay_outcomes("b-1", ["e-1", "e-9"])
    assert [e.essay_id for e in outcomes.essays] == ["e-1", "e-9"]
    recorded = await conductor.record_step_outcome(
        "b-1", "nlp", "e-1", succeeded=True, run_id="r-1", attempt=1
    )
    assert OutcomeVerdict(recorded.verdict) is OutcomeVerdict.SUPERSEDED
    for method in ("ReopenEssays", "ExpireStep", "GetEssayOutcomes", "RecordStepOutcome"):
        assert len(conductor_fake.requests[method]) == 2, method
    sent = conductor_fake.requests["ReopenEssays"][0]
    assert (sent.run_id, sent.attempt, list(sent.steps)) == ("r-1", 2, ["spellcheck", "nlp"])
    sent = conductor_fake.requests["RecordStepOutcome"][0]
    assert (sent.run_id, sent.attempt) == ("r-1", 1)
    await conductor.resolve_pipeline("b-1", "nlp")  # the BatchService rides out a restart
    assert len(conductor_fake.requests["ResolvePipeline"]) == 2


def test_every_rpc_is_retried_unless_a_repeat_would_do_its_work_twice() -> None:
    not_retried = {"TriggerSpellcheck"}  # a repeat stores the text again
    for client, service in (
        (BatchClient, pb.DESCRIPTOR.services_by_name["BatchService"]),
        (ConductorClient, cpb.DESCRIPTOR.services_by_name["PipelineConductorService"]),
    ):
        methods = {m.name for m in service.methods}
        assert set(client.IDEMPOTENT) == methods - not_retried, client.__name__
