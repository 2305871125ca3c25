"""The ``huleedu.batch.v1.BatchService`` servicer: convert, one application call, convert back.

Errors are raised, never turned into statuses here: the interceptor maps them through
``batch_server.api.status.TABLE``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from batch_server.api import convert
from batch_server.service import BatchService
from generated.huleedu.batch.v1 import batch_pb2 as pb
from generated.huleedu.batch.v1 import batch_pb2_grpc
from mesh.grpc.server import Registration

SERVICE_NAME = "huleedu.batch.v1.BatchService"
Context = Any  # grpc.aio.ServicerContext; unused by every method


class BatchServicer(batch_pb2_grpc.BatchServiceServicer):
    def __init__(self, service: BatchService) -> None:
        self._service = service

    async def TriggerSpellcheck(
        self, request: pb.TriggerSpellcheckRequest, context: Context
    ) -> pb.TriggerSpellcheckResponse:
        text, language = convert.trigger_from_proto(request)
        return convert.trigger_to_proto(await self._service.trigger_spellcheck(text, language))

    async def CreateBatch(
        self, request: pb.CreateBatchRequest, context: Context
    ) -> pb.CreateBatchResponse:
        request_id, essays, metadata = convert.create_batch_from_proto(request)
        batch = await self._service.create_batch(request_id, essays, metadata)
        return convert.create_batch_to_proto(batch)

    async def UpdateBatch(
        self, request: pb.UpdateBatchRequest, context: Context
    ) -> pb.UpdateBatchResponse:
        batch_id, update = convert.update_batch_from_proto(request)
        return convert.update_batch_to_proto(await self._service.update_batch(batch_id, update))

    async def StartPipeline(
        self, request: pb.StartPipelineRequest, context: Context
    ) -> pb.StartPipelineResponse:
        batch_id, pipeline, request_id = convert.start_from_proto(request)
        run = await self._service.start_pipeline(batch_id, pipeline, request_id)
        return convert.start_to_proto(run)

    async def GetBatchStatus(
        self, request: pb.GetBatchStatusRequest, context: Context
    ) -> pb.GetBatchStatusResponse:
        batch_id = convert.status_from_proto(request)
        return convert.status_to_proto(await self._service.batch_status(batch_id))

    async def ListBatches(
        self, request: pb.ListBatchesRequest, context: Context
    ) -> pb.ListBatchesResponse:
        size, cursor, filters = convert.list_from_proto(request)
        page = await self._service.list_batches(size, cursor, filters)
        return convert.page_to_proto(page, filters)

    async def CancelRun(
        self, request: pb.CancelRunRequest, context: Context
    ) -> pb.CancelRunResponse:
        batch_id, run_id, reason = convert.cancel_from_proto(request)
        return convert.cancel_to_proto(await self._service.cancel_run(batch_id, run_id, reason))

    async def RetryRun(self, request: pb.RetryRunRequest, context: Context) -> pb.RetryRunResponse:
        batch_id, run_id, steps, request_id = convert.retry_from_proto(request)
        retried = await self._service.retry_run(batch_id, run_id, steps, request_id)
        return convert.retry_to_proto(retried)

    async def WatchBatch(
        self, request: pb.WatchBatchRequest, context: Context
    ) -> AsyncIterator[pb.WatchBatchResponse]:
        batch_id, run_id = convert.watch_from_proto(request)
        sequence = 0
        async for update in self._service.watch(batch_id, run_id):
            sequence += 1
            yield convert.update_to_proto(update, sequence)

    async def GetEssay(self, request: pb.GetEssayRequest, context: Context) -> pb.GetEssayResponse:
        essay_id, batch_id, view = convert.get_essay_from_proto(request)
        return convert.essay_to_proto(await self._service.get_essay(essay_id, batch_id, view))

    async def ListEssays(
        self, request: pb.ListEssaysRequest, context: Context
    ) -> pb.ListEssaysResponse:
        batch_id, size, cursor, view = convert.list_essays_from_proto(request)
        page = await self._service.list_essays(batch_id, size, cursor, view)
        return convert.essay_page_to_proto(page)


def register(servicer: BatchServicer) -> Registration:
    """Adds ``servicer`` to a server."""

    def add(server: grpc.aio.Server) -> None:
        batch_pb2_grpc.add_BatchServiceServicer_to_server(servicer, server)

    return add
