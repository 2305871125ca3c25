"""UpdateBatch below the gRPC layer: the request's parsing, the update rule, and the order of
registering flags and storing them when updates race."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from google.protobuf import field_mask_pb2

from batch_server.api import convert
from batch_server.conductor import Conductor
from batch_server.content.memory import MemoryContentStore
from batch_server.domain.model import Batch, BatchMetadata, EssayInput, MetadataUpdate, Resolution
from batch_server.service import BatchService
from batch_server.store.memory import MemoryBatchStore
from batch_server.watch import ProgressFeed
from generated.huleedu.batch.v1 import batch_pb2 as pb
from mesh.errors import InvalidArgument
from mesh.events.memory import MemoryBus

PROMPT = {"prompt_attached": True}


def test_an_update_replaces_the_named_fields_only() -> None:
    current = BatchMetadata("9B", "ENG5", "sv", {"a": True}, {"term": "spring", "room": "4"})
    new = BatchMetadata("9C", "ENG6", "en", {}, {"term": "autumn"})
    assert MetadataUpdate(frozenset({"labels", "name"}), new).apply(current) == BatchMetadata(
        "9C", "ENG5", "sv", {"a": True}, {"term": "autumn"}
    )
    everything = MetadataUpdate(frozenset({"flags", "labels", "name", "course_code"}), new)
    assert everything.apply(current) == BatchMetadata("9C", "ENG6", "sv", {}, {"term": "autumn"})
    assert everything.apply(everything.apply(current)) == everything.apply(current)


def test_the_request_names_fields_of_the_mask_and_is_checked_whole() -> None:
    request = pb.UpdateBatchRequest(
        batch_id="b1",
        metadata=pb.BatchMetadata(name="9C", flags=PROMPT),
        update_mask=field_mask_pb2.FieldMask(paths=["name", "flags", "name"]),
    )
    batch_id, update = convert.update_batch_from_proto(request)
    assert (batch_id, update.fields) == ("b1", frozenset({"name", "flags"}))
    assert (update.metadata.name, dict(update.metadata.flags)) == ("9C", PROMPT)
    request.update_mask.paths[:] = ["language", "flags"]
    request.metadata.labels["bad key"] = "v"
    request.batch_id = ""
    with pytest.raises(InvalidArgument) as caught:
        convert.update_batch_from_proto(request)
    assert [v.field for v in caught.value.violations] == [
        "batch_id",
        "metadata.labels['bad key']",
        "update_mask.paths[0]",
    ]


class RacingConductor(Conductor):
    """Remembers the flags registered last; right after the first registration, ``then`` runs
    (another update, which registers and stores before the first one stores)."""

    def __init__(self) -> None:
        self.flags: dict[str, bool] | None = None
        self.then: Callable[[], Awaitable[object]] | None = None

    async def register(self, batch: Batch) -> None:
        self.flags = dict(batch.metadata.flags)
        then, self.then = self.then, None
        if then is not None:
            await then()

    async def resolve(self, batch: Batch, target: str) -> Resolution:
        raise NotImplementedError


async def test_of_two_racing_updates_the_conductor_ends_with_the_stored_flags() -> None:
    conductor = RacingConductor()
    service = BatchService(
        MemoryBatchStore(MemoryBus()), MemoryContentStore(), conductor, ProgressFeed()
    )
    batch = await service.create_batch("", [EssayInput("One.")], BatchMetadata())
    first = MetadataUpdate(frozenset({"flags"}), BatchMetadata(flags=PROMPT))
    second = MetadataUpdate(frozenset({"flags", "name"}), BatchMetadata(name="x", flags={}))
    conductor.then = lambda: service.update_batch(batch.batch_id, second)
    updated = await service.update_batch(batch.batch_id, first)
    # the second stored {} after the first registered PROMPT: the first read again, registered
    # PROMPT again and stored it over the second's metadata (keeping its name)
    assert (updated.metadata.name, dict(updated.metadata.flags)) == ("x", PROMPT)
    assert conductor.flags == PROMPT
