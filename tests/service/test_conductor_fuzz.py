"""Whatever a client sends, the conductor answers deliberately: never UNKNOWN or INTERNAL."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generated.huleedu.conductor.v1 import conductor_pb2 as pb
from tests.service.conftest import RunningConductor
from tests.support.proto_strategies import messages

SERVICE = pb.DESCRIPTOR.services_by_name["PipelineConductorService"]
RPCS = [(m.name, m.input_type) for m in SERVICE.methods]
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def _call(conductor: RunningConductor, method: str, request: Message) -> grpc.StatusCode:
    rpc: Any = getattr(conductor.client.stub, method)
    try:
        await rpc(request, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(("method", "request_type"), RPCS, ids=[name for name, _ in RPCS])
@given(data=st.data())
@FUZZ
async def test_random_requests_never_get_unknown_or_internal(
    conductor: RunningConductor, method: str, request_type: Any, data: st.DataObject
) -> None:
    request = data.draw(messages(request_type))
    code = await _call(conductor, method, request)
    assert code not in FORBIDDEN, (method, request)


@pytest.mark.parametrize(("method", "request_type"), RPCS, ids=[name for name, _ in RPCS])
async def test_empty_requests_are_answered_deliberately(
    conductor: RunningConductor, method: str, request_type: Any
) -> None:
    from google.protobuf.message_factory import GetMessageClass

    code = await _call(conductor, method, GetMessageClass(request_type)())
    assert code not in FORBIDDEN
    if method not in {"ListPipelines"}:
        assert code is grpc.StatusCode.INVALID_ARGUMENT, method


async def test_huge_and_non_ascii_fields(conductor: RunningConductor) -> None:
    huge = pb.RegisterBatchRequest(batch_id="b" * 3_000_000, essay_ids=["e"])
    assert await _call(conductor, "RegisterBatch", huge) is grpc.StatusCode.INVALID_ARGUMENT
    too_big = pb.RegisterBatchRequest(batch_id="b", essay_ids=["x" * 1000] * 5000)  # > 4 MiB
    assert await _call(conductor, "RegisterBatch", too_big) is grpc.StatusCode.RESOURCE_EXHAUSTED
    many = pb.RegisterBatchRequest(batch_id="b", essay_ids=[f"e{i}" for i in range(100_001)])
    assert await _call(conductor, "RegisterBatch", many) is grpc.StatusCode.INVALID_ARGUMENT
    unicode = pb.RegisterBatchRequest(batch_id="批次-é-🙂", essay_ids=["essay-ü"])
    assert await _call(conductor, "RegisterBatch", unicode) is grpc.StatusCode.OK
    resolve = pb.ResolvePipelineRequest(batch_id="批次-é-🙂", target="ñlp")
    assert await _call(conductor, "ResolvePipeline", resolve) is grpc.StatusCode.NOT_FOUND
