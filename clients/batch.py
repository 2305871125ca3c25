"""Async client of ``huleedu.batch.v1.BatchService``."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence

import grpc
from opentelemetry import trace

from clients.base import ClientBase
from clients.channel import Credentials
from clients.errors import RpcError
from generated.huleedu.batch.v1 import batch_pb2 as pb
from generated.huleedu.batch.v1 import batch_pb2_grpc

_RESUME_INITIAL, _RESUME_CAP = 0.1, 5.0  # seconds between attempts to resume a watch


class BatchClient(ClientBase):
    """Every BatchService RPC as a method; failures raise ``clients.errors.RpcError``.

    >>> async with BatchClient("127.0.0.1:5000") as batches:
    ...     batch = await batches.create_batch(["First essay.", "Second essay."])
    ...     run = await batches.start_pipeline(batch.batch_id, "spellcheck")
    ...     async for update in batches.watch_batch(batch.batch_id):
    ...         print(update.run.status)
    """

    SERVICE = "huleedu.batch.v1.BatchService"

    def __init__(
        self,
        target: str,
        timeout: float = 10.0,
        credentials: Credentials | None = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        super().__init__(target, timeout, credentials, tracer_provider=tracer_provider)
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

    async def watch_batch(
        self,
        batch_id: str,
        run_id: str = "",
        timeout: float | None = None,
        *,
        resume_for: float = 60.0,
    ) -> AsyncIterator[pb.WatchBatchResponse]:
        """Progress updates of a run until it ends (``timeout`` bounds the whole watch).

        A stream cut with UNAVAILABLE (a server draining for a deploy, its database gone for a
        moment) is opened again for the same run, with backoff, until ``resume_for`` seconds
        pass without getting through (0: never resume). Every update carries the whole run, so
        nothing is missed: an update equal to the last one delivered is skipped, ``sequence``
        counts on across streams, and the first update after a resume that did see a change
        has no ``changed_step``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delivered, last = 0, None
        failing_since: float | None = None
        delay = _RESUME_INITIAL
        while True:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            request = pb.WatchBatchRequest(batch_id=batch_id, run_id=run_id)
            try:
                async for update in self._stream(self.stub.WatchBatch, request, remaining):
                    failing_since = None  # got through
                    run_id = update.run.run_id  # a resume watches this run, not a newer one
                    if update.run == last:
                        continue  # a resumed stream opens with the state already delivered
                    last, delay = update.run, _RESUME_INITIAL
                    delivered += 1
                    update.sequence = delivered
                    yield update
                return  # the run ended
            except RpcError as exc:
                if exc.code is not grpc.StatusCode.UNAVAILABLE:
                    raise
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                pause = delay * (1 - random.random() / 5)
                late = deadline is not None and now + pause >= deadline
                if now - failing_since + pause > resume_for or late:
                    raise
                await asyncio.sleep(pause)
                delay = min(delay * 2, _RESUME_CAP)
