"""Server reflection as grpcurl uses it: v1 and v1alpha, symbols of every kind, with comments."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as pb

from mesh.grpc.reflection import V1, V1ALPHA
from tests.service.conftest import RunningConductor
from tests.support.batch import RunningBatch, batch_service, settings_for

BATCH = "huleedu.batch.v1.BatchService"


@pytest.fixture
async def batches(conductor: RunningConductor) -> AsyncIterator[RunningBatch]:
    async with batch_service(settings_for(conductor.address), conductor.bus) as running:
        yield running


@pytest.fixture
async def channel(batches: RunningBatch) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(batches.address) as channel:
        yield channel


async def _ask(
    channel: grpc.aio.Channel, service: str, request: pb.ServerReflectionRequest
) -> pb.ServerReflectionResponse:
    """One request on a reflection stream of ``service`` (the v1 and v1alpha messages are alike)."""
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=pb.ServerReflectionRequest.SerializeToString,
        response_deserializer=pb.ServerReflectionResponse.FromString,
    )
    responses = [r async for r in call(iter([request]))]
    assert len(responses) == 1
    return responses[0]


async def _files(
    channel: grpc.aio.Channel, service: str, symbol: str
) -> list[descriptor_pb2.FileDescriptorProto]:
    request = pb.ServerReflectionRequest(file_containing_symbol=symbol)
    response = await _ask(channel, service, request)
    assert response.WhichOneof("message_response") == "file_descriptor_response", response
    return [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]


def _comment(file: descriptor_pb2.FileDescriptorProto, path: list[int]) -> str:
    return next(
        loc.leading_comments for loc in file.source_code_info.location if list(loc.path) == path
    )


@pytest.mark.parametrize("service", [V1, V1ALPHA])
async def test_both_versions_list_the_services(channel: grpc.aio.Channel, service: str) -> None:
    response = await _ask(channel, service, pb.ServerReflectionRequest(list_services=""))
    names = {s.name for s in response.list_services_response.service}
    assert names == {BATCH, "grpc.health.v1.Health", V1, V1ALPHA}


@pytest.mark.parametrize("service", [V1, V1ALPHA])
async def test_a_method_is_found_with_its_comment_and_its_fields_comments(
    channel: grpc.aio.Channel, service: str
) -> None:
    files = await _files(channel, service, f"{BATCH}.CreateBatch")
    batch_file = files[0]
    assert batch_file.name == "huleedu/batch/v1/batch.proto"
    # the file comes with its dependencies, so a client needs no second request
    assert {"huleedu/events/v1/events.proto", "google/protobuf/timestamp.proto"} <= {
        f.name for f in files
    }
    methods = [m.name for m in batch_file.service[0].method]
    method_comment = _comment(batch_file, [6, 0, 2, methods.index("CreateBatch")])
    assert "Creates a batch with generated essay ids" in method_comment
    assert "INVALID_ARGUMENT" in method_comment
    messages = [m.name for m in batch_file.message_type]
    request = messages.index("CreateBatchRequest")
    fields = [f.name for f in batch_file.message_type[request].field]
    field_comment = _comment(batch_file, [4, request, 2, fields.index("essays")])
    assert "1 to 10,000" in field_comment


@pytest.mark.parametrize(
    "symbol",
    [
        BATCH,
        "huleedu.batch.v1.CreateBatchRequest",
        "huleedu.batch.v1.CreateBatchRequest.essays",
        "huleedu.batch.v1.RunStatus",
        "huleedu.batch.v1.RUN_STATUS_COMPLETED",
        "huleedu.events.v1.EventEnvelope.payload",
    ],
)
async def test_every_kind_of_symbol_is_found(channel: grpc.aio.Channel, symbol: str) -> None:
    files = await _files(channel, V1, symbol)
    package = symbol.split(".")[1]
    assert files[0].name == f"huleedu/{package}/v1/{package}.proto"


async def test_health_and_reflection_describe_themselves(channel: grpc.aio.Channel) -> None:
    for symbol, name in [
        ("grpc.health.v1.Health", "grpc_health/v1/health.proto"),
        (V1, "grpc/reflection/v1/reflection.proto"),
        (V1ALPHA, "grpc_reflection/v1alpha/reflection.proto"),
    ]:
        files = await _files(channel, V1, symbol)
        assert files[0].name == name


async def test_unknown_symbols_and_files_are_not_found(channel: grpc.aio.Channel) -> None:
    for request in [
        pb.ServerReflectionRequest(file_containing_symbol="huleedu.batch.v1.Nope"),
        pb.ServerReflectionRequest(file_by_filename="nope.proto"),
        pb.ServerReflectionRequest(all_extension_numbers_of_type="huleedu.batch.v1.Nope"),
    ]:
        response = await _ask(channel, V1, request)
        assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_a_file_by_name_and_extension_numbers(channel: grpc.aio.Channel) -> None:
    request = pb.ServerReflectionRequest(file_by_filename="huleedu/conductor/v1/conductor.proto")
    response = await _ask(channel, V1, request)
    raw = response.file_descriptor_response.file_descriptor_proto[0]
    assert descriptor_pb2.FileDescriptorProto.FromString(raw).package == "huleedu.conductor.v1"
    request = pb.ServerReflectionRequest(all_extension_numbers_of_type="huleedu.batch.v1.Batch")
    response = await _ask(channel, V1, request)
    assert response.all_extension_numbers_response.base_type_name == "huleedu.batch.v1.Batch"
    assert list(response.all_extension_numbers_response.extension_number) == []
