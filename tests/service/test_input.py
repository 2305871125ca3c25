"""Bad input is INVALID_ARGUMENT on every RPC, before anything is stored, registered or published.

Embedded mode; ``tests/security/test_input.py`` runs the same table against the real backends.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mesh.events.topics import all_topics
from tests.service.conftest import RunningConductor
from tests.support.batch import RunningBatch, batch_service, settings_for
from tests.support.rpcs import RPCS, Rpc, call, string_fields, with_text

IDS = {"batch_id": "batch-1", "request_id": "request-1", "run_id": "run-1"}
NUL_CASES = [(rpc, path) for rpc in RPCS for path in string_fields(rpc)]


def field_of(path: str) -> str:
    """The violation's field for a path of ``string_fields``: a map entry is named by its key
    in the map's field (``flags['k']``), so only the map's own path is predictable."""
    return re.sub(r"(\{[^}]*\}|\[[^\]0-9][^\]]*\])$", "", path)


def bad_request(error: grpc.aio.AioRpcError) -> error_details_pb2.BadRequest:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    for packed in status.details:
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            found = error_details_pb2.BadRequest()
            packed.Unpack(found)
            return found
    raise AssertionError(f"no BadRequest in {error}")


async def registrations(metrics_port: int) -> float:
    """RegisterBatch calls the conductor has answered OK, from its ``/metrics``."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)).text
    answered = re.compile(
        r'grpc_server_handled_total\{(?=[^}]*grpc_method="RegisterBatch")'
        r'(?=[^}]*grpc_code="OK")[^}]*\} (\S+)'
    )
    found = answered.search(text)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
async def batches(conductor: RunningConductor) -> AsyncIterator[RunningBatch]:
    async with batch_service(settings_for(conductor.address), conductor.bus) as running:
        yield running


async def _refused(
    channel: grpc.aio.Channel, rpc: Rpc, request: Message | bytes
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(channel, rpc, request)
    return raised.value


@pytest.mark.parametrize(("rpc", "path"), NUL_CASES, ids=[f"{r}.{p}" for r, p in NUL_CASES])
async def test_a_nul_in_any_string_is_invalid_argument_and_changes_nothing(
    rpc: Rpc, path: str, conductor: RunningConductor, batches: RunningBatch
) -> None:
    address = conductor.address if rpc.server == "conductor" else batches.address
    request = with_text(rpc.sample(IDS), path, "a\x00b")
    async with grpc.aio.insecure_channel(address) as channel:
        error = await _refused(channel, rpc, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    fields = [v.field for v in bad_request(error).field_violations]
    assert any(f.startswith(field_of(path)) for f in fields), fields
    assert await registrations(conductor.server.metrics_port) == 0
    assert all(conductor.bus.records(topic) == [] for topic in all_topics())
    assert list((await batches.client.list_batches()).batches) == []


@pytest.mark.parametrize("rpc", RPCS, ids=str)
async def test_bytes_that_are_not_the_request_are_invalid_argument(
    rpc: Rpc, conductor: RunningConductor, batches: RunningBatch
) -> None:
    address = conductor.address if rpc.server == "conductor" else batches.address
    async with grpc.aio.insecure_channel(address) as channel:
        for data in (b"\xff\xff\xff", b"\x0a\x02\xff\xfe"):  # corrupt; field 1 with bad UTF-8
            if data[0] == 0x0A and not _first_field_is_text(rpc):
                continue  # an unknown field 1 is kept as such, not an error
            error = await _refused(channel, rpc, data)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
            assert [v.field for v in bad_request(error).field_violations] == ["request"]


def _first_field_is_text(rpc: Rpc) -> bool:
    first = rpc.request_type.DESCRIPTOR.fields_by_number.get(1)
    return first is not None and first.type == first.TYPE_STRING


async def test_a_request_past_the_message_limit_is_resource_exhausted_and_stores_nothing(
    conductor: RunningConductor, batches: RunningBatch
) -> None:
    [create] = [r for r in RPCS if r.name == "CreateBatch"]
    request: Any = create.sample(IDS)
    del request.essays[:]
    request.essays.add(text="x" * (1024 * 1024 - 1))  # each within its own limit...
    request.essays.extend([request.essays[0]] * 4)  # ...five of them past the 4 MiB message
    async with grpc.aio.insecure_channel(batches.address) as channel:
        error = await _refused(channel, create, request)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await registrations(conductor.server.metrics_port) == 0
    assert list((await batches.client.list_batches()).batches) == []
