"""A batch's metadata over a real BatchService and a real embedded conductor: UpdateBatch, and
flags the loaded pipelines do not know, refused before anything is stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2 as details

from batch_server.conductor import Conductor
from batch_server.content.memory import MemoryContentStore
from batch_server.domain.errors import UnknownFlag
from batch_server.domain.model import BatchMetadata, EssayInput
from batch_server.service import BatchService
from batch_server.store.memory import MemoryBatchStore
from batch_server.watch import ProgressFeed
from clients import RpcError
from conductor_server.app import serve as serve_conductor
from conductor_server.settings import ConductorSettings
from generated.huleedu.batch.v1 import batch_pb2 as pb
from mesh.events.memory import MemoryBus
from mesh.events.topics import EventKind
from mesh.grpc.server import GrpcServer
from mesh.settings import BackendSettings
from tests.service.conftest import SERVER, RunningConductor
from tests.support.batch import RunningBatch, batch_service, events_of, settings_for
from tests.support.status import violations

PROMPT = {"prompt_attached": True}
KNOWN = "known flags: prompt_attached"


@pytest.fixture
async def batches(conductor: RunningConductor) -> AsyncIterator[RunningBatch]:
    async with batch_service(settings_for(conductor.address), conductor.bus) as running:
        yield running


async def test_create_batch_with_an_unknown_flag_is_refused_and_stores_nothing(
    batches: RunningBatch,
) -> None:
    with pytest.raises(RpcError) as caught:
        await batches.client.create_batch(["One."], flags={"prompt_atached": True, **PROMPT})
    assert violations(caught.value, "UNKNOWN_FLAG") == [
        ("metadata.flags[prompt_atached]", f"unknown flag 'prompt_atached'; {KNOWN}")
    ]
    assert list((await batches.client.list_batches()).batches) == []
    assert events_of(batches.bus, EventKind.BATCH_CREATED) == []
    created = await batches.client.create_batch(["One."], flags=PROMPT)  # a known flag is fine
    assert dict(created.metadata.flags) == PROMPT


async def test_an_unknown_flag_stores_no_text_either(conductor: RunningConductor) -> None:
    bus, content = MemoryBus(), MemoryContentStore()
    service = BatchService(
        MemoryBatchStore(bus), content, Conductor(conductor.client), ProgressFeed()
    )
    essays = [EssayInput("One."), EssayInput("Two.")]
    with pytest.raises(UnknownFlag) as caught:
        await service.create_batch("r1", essays, BatchMetadata(flags={"x": True, "y": False}))
    assert sorted(caught.value.flags) == ["x", "y"]
    assert len(content) == 0
    assert (await service.list_batches(10, None)).batches == ()
    assert await service.create_batch("r2", essays, BatchMetadata(flags=PROMPT))
    assert len(content) == 2


# --- UpdateBatch --------------------------------------------------------------------------


async def update(
    batches: RunningBatch, batch_id: str, paths: list[str], **metadata: Any
) -> pb.Batch:
    """UpdateBatch of ``paths`` to ``metadata`` (BatchMetadata fields); raises ``RpcError``."""
    request = pb.UpdateBatchRequest(
        batch_id=batch_id,
        metadata=pb.BatchMetadata(**metadata),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )
    try:
        response = await batches.client.stub.UpdateBatch(request, timeout=10)
    except grpc.aio.AioRpcError as exc:
        raise RpcError.from_aio(exc) from exc
    return response.batch


async def create(batches: RunningBatch, **metadata: Any) -> pb.Batch:
    """CreateBatch of one essay with ``metadata`` (BatchMetadata fields, labels too)."""
    request = pb.CreateBatchRequest(
        essays=[pb.EssayInput(text="One.")], metadata=pb.BatchMetadata(**metadata)
    )
    return (await batches.client.stub.CreateBatch(request, timeout=10)).batch


async def registered_flags(conductor: RunningConductor, batch_id: str) -> dict[str, bool]:
    return dict((await conductor.client.get_batch_pipeline_state(batch_id)).flags)


async def test_update_batch_replaces_the_named_fields_and_registers_the_flags(
    batches: RunningBatch, conductor: RunningConductor
) -> None:
    created = await create(
        batches, name="9B", course_code="ENG5", labels={"term": "spring", "room": "4"}
    )
    batch_id = created.batch_id
    assert await registered_flags(conductor, batch_id) == {}
    changes = {"name": "9C", "course_code": "ENG6", "labels": {"term": "autumn"}, "flags": PROMPT}
    updated = await update(batches, batch_id, ["name", "course_code", "labels", "flags"], **changes)
    assert (updated.metadata.name, updated.metadata.course_code) == ("9C", "ENG6")
    assert dict(updated.metadata.labels) == {"term": "autumn"}  # a map is replaced whole
    assert dict(updated.metadata.flags) == PROMPT
    assert updated.metadata.language == "en"
    assert list(updated.essays) == list(created.essays)
    assert updated.created_at == created.created_at
    assert (await batches.client.get_batch_status(batch_id)).batch == updated
    assert await registered_flags(conductor, batch_id) == PROMPT
    again = await update(batches, batch_id, ["name", "course_code", "labels", "flags"], **changes)
    assert again == updated  # idempotent


async def test_update_batch_changes_only_the_fields_its_mask_names(batches: RunningBatch) -> None:
    created = await create(batches, name="9B", labels={"term": "spring"})
    updated = await update(
        batches, created.batch_id, ["name"], name="9C", labels={"x": "y"}, course_code="Z"
    )
    assert (updated.metadata.name, dict(updated.metadata.labels)) == ("9C", {"term": "spring"})
    assert updated.metadata.course_code == ""
    cleared = await update(batches, created.batch_id, ["labels", "name"])
    assert (cleared.metadata.name, dict(cleared.metadata.labels)) == ("", {})


async def test_flags_take_effect_for_runs_started_afterwards(batches: RunningBatch) -> None:
    batch = await batches.client.create_batch(["One."])
    with pytest.raises(RpcError) as caught:
        await batches.client.start_pipeline(batch.batch_id, "nlp")
    assert caught.value.reason == "PREREQUISITES_NOT_MET"
    await update(batches, batch.batch_id, ["flags"], flags=PROMPT)
    started = await batches.client.start_pipeline(batch.batch_id, "nlp")
    assert list(started.steps) == ["spellcheck", "nlp"]


async def test_update_batch_of_an_unknown_batch_is_not_found(batches: RunningBatch) -> None:
    with pytest.raises(RpcError) as caught:
        await update(batches, "no-such-batch", ["name"], name="x")
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "BATCH_NOT_FOUND",
    )
    info = caught.value.detail(details.ResourceInfo)
    assert isinstance(info, details.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("batch", "no-such-batch")


@pytest.mark.parametrize(
    ("paths", "metadata", "fields"),
    [
        ([], {"name": "x"}, ["update_mask.paths"]),
        (["name", "language"], {}, ["update_mask.paths[1]"]),
        (["essays", "metadata.name"], {}, ["update_mask.paths[0]", "update_mask.paths[1]"]),
        (["name"], {"name": "n" * 257}, ["metadata.name"]),
        (["course_code"], {"course_code": "c" * 65}, ["metadata.course_code"]),
        (["labels"], {"labels": {"bad key": "v"}}, ["metadata.labels['bad key']"]),
        (["labels"], {"labels": {"k": "v" * 257}}, ["metadata.labels['k']"]),
        (["flags"], {"flags": {"bad flag": True}}, ["metadata.flags['bad flag']"]),
        (["name"], {"language": "not a tag!"}, ["metadata.language"]),  # checked whole
    ],
)
async def test_a_bad_update_is_invalid_argument_and_changes_nothing(
    batches: RunningBatch, paths: list[str], metadata: dict[str, Any], fields: list[str]
) -> None:
    created = await batches.client.create_batch(["One."], name="9B")
    with pytest.raises(RpcError) as caught:
        await update(batches, created.batch_id, paths, **metadata)
    assert [field for field, _ in violations(caught.value)] == fields
    assert (await batches.client.get_batch_status(created.batch_id)).batch == created


async def test_an_unknown_flag_is_refused_and_changes_nothing(
    batches: RunningBatch, conductor: RunningConductor
) -> None:
    created = await batches.client.create_batch(["One."], name="9B", flags=PROMPT)
    with pytest.raises(RpcError) as caught:
        await update(batches, created.batch_id, ["flags", "name"], flags={"promt": True}, name="x")
    assert violations(caught.value, "UNKNOWN_FLAG") == [
        ("metadata.flags[promt]", f"unknown flag 'promt'; {KNOWN}")
    ]
    assert (await batches.client.get_batch_status(created.batch_id)).batch == created
    assert await registered_flags(conductor, created.batch_id) == PROMPT


async def test_update_batch_with_the_conductor_down_is_unavailable_and_changes_nothing() -> None:
    settings = ConductorSettings(server=SERVER, backends=BackendSettings())
    bus, stop = MemoryBus(), asyncio.Event()
    ready: asyncio.Future[GrpcServer] = asyncio.get_running_loop().create_future()
    conductor = asyncio.create_task(serve_conductor(settings, stop, bus, ready.set_result))
    address = f"127.0.0.1:{(await asyncio.wait_for(ready, 30)).port}"
    async with batch_service(settings_for(address), bus) as batches:
        created = await batches.client.create_batch(["One."], name="9B")
        stop.set()
        await asyncio.wait_for(conductor, 30)
        with pytest.raises(RpcError) as caught:
            await update(batches, created.batch_id, ["flags", "name"], flags=PROMPT, name="x")
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        info = caught.value.detail(details.ResourceInfo)
        assert isinstance(info, details.ResourceInfo)
        assert info.resource_name == "conductor"
        assert (await batches.client.get_batch_status(created.batch_id)).batch == created
        renamed = await update(batches, created.batch_id, ["name"], name="x")  # needs no conductor
        assert renamed.metadata.name == "x"


async def test_concurrent_updates_leave_the_conductor_with_the_batch_s_flags(
    batches: RunningBatch, conductor: RunningConductor
) -> None:
    batch = await batches.client.create_batch(["One."])
    variants = [PROMPT, {"prompt_attached": False}, {}] * 4
    await asyncio.gather(*(update(batches, batch.batch_id, ["flags"], flags=f) for f in variants))
    stored = (await batches.client.get_batch_status(batch.batch_id)).batch.metadata.flags
    assert {k for k, v in stored.items() if v} == set(
        await registered_flags(conductor, batch.batch_id)
    )


async def test_a_create_batch_retry_after_an_update_still_returns_the_batch(
    batches: RunningBatch,
) -> None:
    created = await batches.client.create_batch(["One."], name="9B", request_id="create-1")
    updated = await update(batches, created.batch_id, ["name"], name="9C")
    retried = await batches.client.create_batch(["One."], name="9B", request_id="create-1")
    assert retried == updated  # the request's fingerprint, not the batch's metadata now
    with pytest.raises(RpcError) as caught:  # the batch's new metadata is another request
        await batches.client.create_batch(["One."], name="9C", request_id="create-1")
    assert caught.value.reason == "REQUEST_ID_REUSED"
    assert len((await batches.client.list_batches()).batches) == 1
