"""A batch's metadata over a real BatchService and a real embedded conductor: flags the loaded
pipelines do not know are refused before anything is stored."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2 as details

from batch_server.conductor import Conductor
from batch_server.content.memory import MemoryContentStore
from batch_server.domain.errors import UnknownFlag
from batch_server.domain.model import BatchMetadata, EssayInput
from batch_server.service import BatchService
from batch_server.store.memory import MemoryBatchStore
from batch_server.watch import ProgressFeed
from clients import RpcError
from mesh.events.memory import MemoryBus
from mesh.events.topics import EventKind
from tests.service.conftest import RunningConductor
from tests.support.batch import RunningBatch, batch_service, events_of, settings_for

PROMPT = {"prompt_attached": True}
KNOWN = "known flags: prompt_attached"


@pytest.fixture
async def batches(conductor: RunningConductor) -> AsyncIterator[RunningBatch]:
    async with batch_service(settings_for(conductor.address), conductor.bus) as running:
        yield running


def unknown_flags(error: RpcError) -> list[tuple[str, str]]:
    """The violations of an UNKNOWN_FLAG refusal: (field, description)."""
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "UNKNOWN_FLAG"
    bad = error.detail(details.BadRequest)
    assert isinstance(bad, details.BadRequest)
    return [(v.field, v.description) for v in bad.field_violations]


async def test_create_batch_with_an_unknown_flag_is_refused_and_stores_nothing(
    batches: RunningBatch,
) -> None:
    with pytest.raises(RpcError) as caught:
        await batches.client.create_batch(["One."], flags={"prompt_atached": True, **PROMPT})
    assert unknown_flags(caught.value) == [
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
