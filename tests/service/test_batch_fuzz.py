"""Whatever a client sends, the BatchService answers deliberately: never UNKNOWN or INTERNAL.

Each RPC gets random requests, half of them aimed at a batch and a run that exist (a random
``batch_id`` is almost never found, and the paths past the lookup are where a request's other
fields are read)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generated.huleedu.batch.v1 import batch_pb2 as pb
from tests.service.conftest import RunningConductor
from tests.support.batch import RunningBatch, batch_service, settings_for
from tests.support.proto_strategies import messages

SERVICE = pb.DESCRIPTOR.services_by_name["BatchService"]
RPCS = [(m.name, m.input_type, m.server_streaming) for m in SERVICE.methods]
IDS = [name for name, _, _ in RPCS]
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
async def batches(conductor: RunningConductor) -> AsyncIterator[tuple[RunningBatch, pb.Batch]]:
    """A BatchService with one batch whose spellcheck run is under way."""
    async with batch_service(settings_for(conductor.address), conductor.bus) as running:
        created = await running.client.stub.CreateBatch(
            pb.CreateBatchRequest(essays=[pb.EssayInput(text="One."), pb.EssayInput(text="Two.")]),
            timeout=10,
        )
        await running.client.start_pipeline(created.batch.batch_id, "spellcheck")
        yield running, created.batch


async def _call(batches: RunningBatch, method: str, request: Message, streaming: bool) -> Any:
    rpc: Any = getattr(batches.client.stub, method)
    try:
        if streaming:
            async for _ in rpc(request, timeout=1):
                break  # the first update is an answer; a live stream is left to its deadline
        else:
            await rpc(request, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _aimed(request: Message, batch: pb.Batch, run_id: str) -> Message:
    fields = request.DESCRIPTOR.fields_by_name
    if "batch_id" in fields:
        request.batch_id = batch.batch_id  # type: ignore[attr-defined]
    if "run_id" in fields and run_id:
        request.run_id = run_id  # type: ignore[attr-defined]
    if "essay_id" in fields and batch.essays:
        request.essay_id = batch.essays[0].essay_id  # type: ignore[attr-defined]
    return request


@pytest.mark.parametrize(("method", "request_type", "streaming"), RPCS, ids=IDS)
@given(data=st.data())
@FUZZ
async def test_random_requests_never_get_unknown_or_internal(
    batches: tuple[RunningBatch, pb.Batch],
    method: str,
    request_type: Any,
    streaming: bool,
    data: st.DataObject,
) -> None:
    running, batch = batches
    request = data.draw(messages(request_type))
    if data.draw(st.booleans(), label="aimed at the batch"):
        status = await running.client.get_batch_status(batch.batch_id)
        request = _aimed(request, batch, status.runs[0].run_id if status.runs else "")
    code = await _call(running, method, request, streaming)
    assert code not in FORBIDDEN, (method, request)


@pytest.mark.parametrize(("method", "request_type", "streaming"), RPCS, ids=IDS)
async def test_empty_requests_are_invalid_arguments(
    batches: tuple[RunningBatch, pb.Batch], method: str, request_type: Any, streaming: bool
) -> None:
    running, _ = batches
    code = await _call(running, method, GetMessageClass(request_type)(), streaming)
    if method == "ListBatches":
        assert code is grpc.StatusCode.OK
    else:
        assert code is grpc.StatusCode.INVALID_ARGUMENT, (method, code)
