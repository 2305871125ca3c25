"""Async client of ``huleedu.batch.v1.BatchService``."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2
from opentelemetry import trace

from clients.base import ClientBase, ensure_request_id, pages
from clients.channel import Credentials
from clients.enums import EssayView
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

    Calls that are safe to repeat are retried on UNAVAILABLE: the reads, ``cancel_run``,
    ``update_batch``, and ``create_batch``, ``start_pipeline`` and ``retry_run``, which carry a
    request id (a random one when the caller gives none, so a retry cannot do the work twice).
    ``trigger_spellcheck`` is never retried: a repeat stores the text again.
    """

    SERVICE = "huleedu.batch.v1.BatchService"
    IDEMPOTENT = (
        "CreateBatch",
        "StartPipeline",
        "GetBatchStatus",
        "ListBatches",
        "WatchBatch",
        "CancelRun",
        "RetryRun",
        "UpdateBatch",
        "GetEssay",
        "ListEssays",
    )

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
        *,
        labels: Mapping[str, str] | None = None,
    ) -> pb.Batch:
        """A new batch of ``texts``; a repeat with the same ``request_id`` returns it again."""
        request = pb.CreateBatchRequest(
            request_id=ensure_request_id(request_id),
            essays=[
                pb.EssayInput(text=text, client_ref=f"essay-{i}") for i, text in enumerate(texts)
            ],
            metadata=pb.BatchMetadata(
                name=name, flags=flags, language=language, course_code=course_code, labels=labels
            ),
        )
        response = await self._unary(self.stub.CreateBatch, request, timeout)
        return response.batch

    async def start_pipeline(
        self, batch_id: str, pipeline: str, request_id: str = "", timeout: float | None = None
    ) -> pb.StartPipelineResponse:
        """A new run of ``pipeline`` (or of one step); a repeat with the same ``request_id``
        returns the same run."""
        request = pb.StartPipelineRequest(
            batch_id=batch_id, pipeline=pipeline, request_id=ensure_request_id(request_id)
        )
        return await self._unary(self.stub.StartPipeline, request, timeout)

    async def get_batch_status(
        self, batch_id: str, timeout: float | None = None
    ) -> pb.GetBatchStatusResponse:
        request = pb.GetBatchStatusRequest(batch_id=batch_id)
        return await self._unary(self.stub.GetBatchStatus, request, timeout)

    async def list_batches(
        self,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
        *,
        statuses: Sequence[int] = (),
        labels: Mapping[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> pb.ListBatchesResponse:
        """One page of batches, newest first: only those whose newest run has one of
        ``statuses`` (``RunStatus.UNSPECIFIED``: no run yet), with every one of ``labels``,
        created in [``created_after``, ``created_before``) when given. A ``page_token`` is
        valid only with the filters it was issued for."""
        request = pb.ListBatchesRequest(
            page_size=page_size,
            page_token=page_token,
            latest_run_statuses=[pb.RunStatus.ValueType(s) for s in statuses],
            labels=labels,
            created_after=_timestamp(created_after),
            created_before=_timestamp(created_before),
        )
        return await self._unary(self.stub.ListBatches, request, timeout)

    def iter_batches(
        self,
        page_size: int = 100,
        *,
        statuses: Sequence[int] = (),
        labels: Mapping[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> AsyncIterator[pb.BatchSummary]:
        """Every batch (of those the filters of ``list_batches`` pass), page after page."""

        async def page(token: str) -> pb.ListBatchesResponse:
            return await self.list_batches(
                page_size,
                token,
                statuses=statuses,
                labels=labels,
                created_after=created_after,
                created_before=created_before,
            )

        return pages(page, lambda response: response.batches)

    async def cancel_run(
        self, batch_id: str, run_id: str, reason: str = "", timeout: float | None = None
    ) -> pb.PipelineRun:
        """Cancel an active run (nothing more is dispatched for it); the run, CANCELLED.
        Cancelling a cancelled run returns it; one that ended otherwise is FAILED_PRECONDITION
        (reason RUN_FINISHED)."""
        request = pb.CancelRunRequest(batch_id=batch_id, run_id=run_id, reason=reason)
        response = await self._unary(self.stub.CancelRun, request, timeout)
        return response.run

    async def retry_run(
        self,
        batch_id: str,
        run_id: str,
        steps: Sequence[str] = (),
        request_id: str = "",
        timeout: float | None = None,
    ) -> pb.RetryRunResponse:
        """Start a new attempt of a finished run for the essays that failed, timed out or never
        reported (in ``steps`` and their dependants only, when given). A repeat with the same
        ``request_id`` returns the run as that retry left it; without one, each call has its
        own, so an automatic retry of the call cannot start two attempts."""
        request = pb.RetryRunRequest(
            batch_id=batch_id, run_id=run_id, steps=steps, request_id=ensure_request_id(request_id)
        )
        return await self._unary(self.stub.RetryRun, request, timeout)

    async def update_batch(
        self,
        batch_id: str,
        *,
        flags: Mapping[str, bool] | None = None,
        labels: Mapping[str, str] | None = None,
        name: str | None = None,
        course_code: str | None = None,
        timeout: float | None = None,
    ) -> pb.Batch:
        """Replace the metadata fields given (a map whole: ``flags={}`` clears the flags) and
        leave the others; the batch after the update. ``ValueError`` when none is given.

        >>> await batches.update_batch(batch_id, flags={"prompt_attached": True})
        """
        given = {
            path: value
            for path, value in (
                ("flags", flags),
                ("labels", labels),
                ("name", name),
                ("course_code", course_code),
            )
            if value is not None
        }
        if not given:
            raise ValueError("update_batch needs at least one of flags, labels, name, course_code")
        request = pb.UpdateBatchRequest(
            batch_id=batch_id,
            metadata=pb.BatchMetadata(
                flags=flags, labels=labels, name=name or "", course_code=course_code or ""
            ),
            update_mask=field_mask_pb2.FieldMask(paths=list(given)),
        )
        response = await self._unary(self.stub.UpdateBatch, request, timeout)
        return response.batch

    async def get_essay(
        self,
        essay_id: str,
        batch_id: str = "",
        view: EssayView = EssayView.FULL,
        timeout: float | None = None,
    ) -> pb.EssayDetail:
        """One essay with its step results and (``EssayView.FULL``) its original and latest
        texts; with ``batch_id``, an essay of another batch is NOT_FOUND."""
        request = pb.GetEssayRequest(
            essay_id=essay_id, batch_id=batch_id, view=pb.EssayView.ValueType(view)
        )
        response = await self._unary(self.stub.GetEssay, request, timeout)
        return response.essay

    async def list_essays(
        self,
        batch_id: str,
        page_size: int = 0,
        page_token: str = "",
        view: EssayView = EssayView.BASIC,
        timeout: float | None = None,
    ) -> pb.ListEssaysResponse:
        """One page of a batch's essays in batch order, each with its step results (and, with
        ``EssayView.FULL``, its texts)."""
        request = pb.ListEssaysRequest(
            batch_id=batch_id,
            page_size=page_size,
            page_token=page_token,
            view=pb.EssayView.ValueType(view),
        )
        return await self._unary(self.stub.ListEssays, request, timeout)

    def iter_essays(
        self, batch_id: str, page_size: int = 100, view: EssayView = EssayView.BASIC
    ) -> AsyncIterator[pb.EssayDetail]:
        """Every essay of a batch, in batch order, page after page."""

        async def page(token: str) -> pb.ListEssaysResponse:
            return await self.list_essays(batch_id, page_size, token, view)

        return pages(page, lambda response: response.essays)

    async def watch_batch(
        self,
        batch_id: str,
        run_id: str = "",
        timeout: float | None = None,
        *,
        resume_for: float = 60.0,
        on_resume: Callable[[RpcError, float], object] | None = None,
    ) -> AsyncIterator[pb.WatchBatchResponse]:
        """Progress updates of a run until it ends (``timeout`` bounds the whole watch).

        A stream cut with UNAVAILABLE (a server draining for a deploy, its database gone for a
        moment) is opened again for the same run, with backoff, until ``resume_for`` seconds
        pass without getting through (0: never resume). Every update carries the whole run, so
        nothing is missed: an update equal to the last one delivered is skipped, ``sequence``
        counts on across streams, and the first update after a resume that did see a change
        has no ``changed_step``. ``on_resume(error, pause)``, when given, is called before each
        attempt to resume, with the error that cut (or refused) the stream and the seconds until
        the attempt: a caller can show that the watch is reconnecting.
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
                if on_resume is not None:
                    on_resume(exc, pause)
                await asyncio.sleep(pause)
                delay = min(delay * 2, _RESUME_CAP)


def _timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    """``moment`` as a Timestamp (a naive datetime is UTC), None for None."""
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp
