"""Async client of ``huleedu.batch.v1.BatchService``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

from clients.base import ClientBase
from generated.huleedu.batch.v1 import batch_pb2 as pb
from generated.huleedu.batch.v1 import batch_pb2_grpc


class BatchClient(ClientBase):
    """Every BatchService RPC as a method; failures raise ``clients.errors.RpcError``.

    >>> async with BatchClient("127.0.0.1:5000") as batches:
    ...     batch = await batches.create_batch(["First essay.", "Second essay."])
    ...     run = await batches.start_pipeline(batch.batch_id, "spellcheck")
    ...     async for update in batches.watch_batch(batch.batch_id):
    ...         print(update.run.status)
    """

    SERVICE = "huleedu.batch.v1.BatchService"

    def __init__(self, target: str, timeout: float = 10.0) -> None:
        super().__init__(target, timeout)
        self.stub = batch_pb2_grpc.BatchServiceStub(self._channel)

    async def trigger_spellcheck(
        self, text: str, language: str = "", timeout: float | None = None
    ) -> pb.TriggerSpellcheckResponse:
        request = pb.TriggerSpellcheckRequest(text=text, language=language)
        return await self._unary(self.stub.TriggerSpellcheck, request, timeout)

    async def create_batch(
        self,
        texts: Sequence[str],
        request_id: str = "",
        name: str = "",
        flags: Mapping[str, bool] | None = None,
        language: str = "",
        course_code: str = "",
        timeout: float | None = None,
    ) -> pb.Batch:
        request = pb.CreateBatchRequest(
            request_id=request_id,
            essays=[
                pb.EssayInput(text=text, client_ref=f"essay-{i}") for i, text in enumerate(texts)
            ],
            metadata=pb.BatchMetadata(
                name=name, flags=flags, language=language, course_code=course_code
            ),
        )
        response = await self._unary(self.stub.CreateBatch, request, timeout)
        return response.batch

    async def start_pipeline(
        self, batch_id: str, pipeline: str, request_id: str = "", timeout: float | None = None
    ) -> pb.StartPipelineResponse:
        request = pb.StartPipelineRequest(
            batch_id=batch_id, pipeline=pipeline, request_id=request_id
        )
        return await self._unary(self.stub.StartPipeline, request, timeout)

    async def get_batch_status(
        self, batch_id: str, timeout: float | None = None
    ) -> pb.GetBatchStatusResponse:
        request = pb.GetBatchStatusRequest(batch_id=batch_id)
        return await self._unary(self.stub.GetBatchStatus, request, timeout)

    async def list_batches(
        self, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> pb.ListBatchesResponse:
        request = pb.ListBatchesRequest(page_size=page_size, page_token=page_token)
        return await self._unary(self.stub.ListBatches, request, timeout)

    async def iter_batches(self, page_size: int = 100) -> AsyncIterator[pb.BatchSummary]:
        """Every batch, fetching page after page."""
        token = ""
        while True:
            page = await self.list_batches(page_size, token)
            for summary in page.batches:
                yield summary
            token = page.next_page_token
            if not token:
                return

    def watch_batch(
        self, batch_id: str, run_id: str = "", timeout: float | None = None
    ) -> AsyncIterator[pb.WatchBatchResponse]:
        """Progress updates of a run until it ends (``timeout`` bounds the whole stream)."""
        request = pb.WatchBatchRequest(batch_id=batch_id, run_id=run_id)
        return self._stream(self.stub.WatchBatch, request, timeout)
