"""ListBatches' filters over a real BatchService (embedded mode) and a real embedded conductor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import grpc
import pytest

from batch_server.api.convert import timestamp_to_proto
from clients import RpcError
from generated.huleedu.batch.v1 import batch_pb2 as pb
from tests.service.conftest import RunningConductor
from tests.support.batch import RunningBatch, Worker, batch_service, settings_for
from tests.support.polling import eventually
from tests.support.status import violations


@pytest.fixture
async def batches(conductor: RunningConductor) -> AsyncIterator[RunningBatch]:
    async with batch_service(settings_for(conductor.address), conductor.bus) as running:
        yield running


async def listing(batches: RunningBatch, **request: Any) -> pb.ListBatchesResponse:
    """ListBatches with ``request``'s fields; raises ``RpcError``."""
    try:
        return await batches.client.stub.ListBatches(pb.ListBatchesRequest(**request), timeout=10)
    except grpc.aio.AioRpcError as exc:
        raise RpcError.from_aio(exc) from exc


async def ids(batches: RunningBatch, **request: Any) -> list[str]:
    return [b.batch_id for b in (await listing(batches, **request)).batches]


async def create(batches: RunningBatch, name: str, **labels: str) -> pb.Batch:
    request = pb.CreateBatchRequest(
        essays=[pb.EssayInput(text="One.")], metadata=pb.BatchMetadata(name=name, labels=labels)
    )
    return (await batches.client.stub.CreateBatch(request, timeout=10)).batch


async def test_batches_are_filtered_by_newest_run_status_labels_and_time(
    batches: RunningBatch,
) -> None:
    fresh = await create(batches, "fresh", term="spring")
    done = await create(batches, "done", term="spring", room="4")
    going = await create(batches, "going", term="autumn")
    await batches.client.start_pipeline(done.batch_id, "spellcheck")
    worker = Worker(batches.bus)

    async def done_completed() -> bool:
        await worker.work()
        status = await batches.client.get_batch_status(done.batch_id)
        return status.runs[0].status == pb.RUN_STATUS_COMPLETED

    await eventually(done_completed, what="the run of 'done' to complete")
    await batches.client.start_pipeline(going.batch_id, "spellcheck")

    listed = {b.name: b for b in (await listing(batches)).batches}
    assert {name: dict(b.labels) for name, b in listed.items()} == {
        "fresh": {"term": "spring"},
        "done": {"term": "spring", "room": "4"},
        "going": {"term": "autumn"},
    }
    completed = await ids(batches, latest_run_statuses=[pb.RUN_STATUS_COMPLETED])
    assert completed == [done.batch_id]
    without_run = [pb.RUN_STATUS_UNSPECIFIED, pb.RUN_STATUS_RUNNING]
    assert await ids(batches, latest_run_statuses=without_run) == [
        going.batch_id,
        fresh.batch_id,
    ]
    assert await ids(batches, labels={"term": "spring"}) == [done.batch_id, fresh.batch_id]
    assert await ids(batches, labels={"term": "spring", "room": "4"}) == [done.batch_id]
    assert await ids(batches, labels={"term": "winter"}) == []
    since = done.created_at  # inclusive
    assert await ids(batches, created_after=since) == [going.batch_id, done.batch_id]
    assert await ids(batches, created_before=since) == [fresh.batch_id]  # exclusive
    assert await ids(
        batches, created_after=since, created_before=going.created_at, labels={"room": "4"}
    ) == [done.batch_id]


async def test_pages_of_a_filtered_listing_follow_their_token(batches: RunningBatch) -> None:
    created = [await create(batches, f"b{n}", parity=("even", "odd")[n % 2]) for n in range(7)]
    even = {"labels": {"parity": "even"}, "page_size": 2}
    pages: list[list[str]] = []
    token = ""
    while True:
        page = await listing(batches, page_token=token, **even)
        pages.append([b.name for b in page.batches])
        token = page.next_page_token
        if not token:
            break
    assert pages == [["b6", "b4"], ["b2", "b0"]]
    assert len(created) == 7


async def test_a_page_token_is_refused_for_other_filters(batches: RunningBatch) -> None:
    for n in range(3):
        await create(batches, f"b{n}", term="spring")
    first = await listing(batches, page_size=1, labels={"term": "spring"})
    assert first.next_page_token
    for other in (
        {"labels": {"term": "autumn"}},
        {},
        {"latest_run_statuses": [pb.RUN_STATUS_UNSPECIFIED], "labels": {"term": "spring"}},
    ):
        with pytest.raises(RpcError) as caught:
            await listing(batches, page_size=1, page_token=first.next_page_token, **other)
        assert [field for field, _ in violations(caught.value)] == ["page_token"]
    same = await listing(
        batches, page_size=1, page_token=first.next_page_token, labels={"term": "spring"}
    )
    assert [b.name for b in same.batches] == ["b1"]


NOW = datetime(2026, 3, 1, 9, 0).astimezone()


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"created_after": NOW, "created_before": NOW}, "created_after"),
        ({"created_after": NOW + timedelta(seconds=1), "created_before": NOW}, "created_after"),
        ({"latest_run_statuses": [42]}, "latest_run_statuses[0]"),
        ({"labels": {"bad key": "x"}}, "labels['bad key']"),
    ],
)
async def test_bad_filters_are_invalid_argument(
    batches: RunningBatch, request_fields: dict[str, Any], field: str
) -> None:
    request = {
        name: timestamp_to_proto(value) if isinstance(value, datetime) else value
        for name, value in request_fields.items()
    }
    with pytest.raises(RpcError) as caught:
        await listing(batches, **request)
    assert [field for field, _ in violations(caught.value)] == [field]
