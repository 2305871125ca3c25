"""Async client of ``huleedu.conductor.v1.PipelineConductorService``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry import trace

from clients.base import ClientBase
from clients.channel import Credentials
from generated.huleedu.conductor.v1 import conductor_pb2 as pb
from generated.huleedu.conductor.v1 import conductor_pb2_grpc
from generated.huleedu.events.v1 import events_pb2


class ConductorClient(ClientBase):
    """Every conductor RPC as a method; failures raise ``clients.errors.RpcError``.

    >>> async with ConductorClient("127.0.0.1:5050") as conductor:
    ...     plan = await conductor.resolve_pipeline("batch-1", "nlp", dry_run=True)
    """

    SERVICE = "huleedu.conductor.v1.PipelineConductorService"
    # ResolvePipeline too, though a repeat of a resolution that is not a dry run publishes its
    # PhaseSkipped events again: the BatchService resolves through this client and rides out a
    # conductor restart this way (the Go and TypeScript SDKs, for other callers, do not retry it).
    IDEMPOTENT = (
        "ListPipelines",
        "ResolvePipeline",
        "GetPipeline",
        "RegisterBatch",
        "ValidatePrerequisites",
        "RecordStepOutcome",
        "GetBatchPipelineState",
        "ReopenEssays",
        "ExpireStep",
        "GetEssayOutcomes",
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
        self.stub = conductor_pb2_grpc.PipelineConductorServiceStub(self._channel)

    async def list_pipelines(self, timeout: float | None = None) -> pb.ListPipelinesResponse:
        return await self._unary(self.stub.ListPipelines, pb.ListPipelinesRequest(), timeout)

    async def get_pipeline(self, name: str, timeout: float | None = None) -> pb.Pipeline:
        response = await self._unary(
            self.stub.GetPipeline, pb.GetPipelineRequest(name=name), timeout
        )
        return response.pipeline

    async def register_batch(
        self,
        batch_id: str,
        essay_ids: list[str],
        flags: Mapping[str, bool] | None = None,
        timeout: float | None = None,
    ) -> pb.RegisterBatchResponse:
        request = pb.RegisterBatchRequest(batch_id=batch_id, essay_ids=essay_ids, flags=flags)
        return await self._unary(self.stub.RegisterBatch, request, timeout)

    async def resolve_pipeline(
        self,
        batch_id: str,
        target: str,
        flags: Mapping[str, bool] | None = None,
        dry_run: bool = False,
        timeout: float | None = None,
    ) -> pb.ResolvePipelineResponse:
        request = pb.ResolvePipelineRequest(
            batch_id=batch_id, target=target, flags=flags, dry_run=dry_run
        )
        return await self._unary(self.stub.ResolvePipeline, request, timeout)

    async def validate_prerequisites(
        self,
        batch_id: str,
        step: str,
        flags: Mapping[str, bool] | None = None,
        timeout: float | None = None,
    ) -> pb.ValidatePrerequisitesResponse:
        request = pb.ValidatePrerequisitesRequest(batch_id=batch_id, step=step, flags=flags)
        return await self._unary(self.stub.ValidatePrerequisites, request, timeout)

    async def record_step_outcome(
        self,
        batch_id: str,
        step: str,
        essay_id: str,
        succeeded: bool,
        event_id: str = "",
        output_storage_id: str = "",
        timeout: float | None = None,
        *,
        run_id: str = "",
        attempt: int = 0,
        error: events_pb2.ErrorDetail | None = None,
    ) -> pb.RecordStepOutcomeResponse:
        """Count one essay's outcome of one step (of ``run_id``'s ``attempt``, when known);
        the response's ``verdict`` (``OutcomeVerdict``) says whether it counted."""
        outcome = events_pb2.STEP_OUTCOME_SUCCEEDED if succeeded else events_pb2.STEP_OUTCOME_FAILED
        request = pb.RecordStepOutcomeRequest(
            batch_id=batch_id,
            step=step,
            essay_id=essay_id,
            outcome=outcome,
            event_id=event_id,
            output_storage_id=output_storage_id,
            run_id=run_id,
            attempt=attempt,
            error=error,
        )
        return await self._unary(self.stub.RecordStepOutcome, request, timeout)

    async def get_batch_pipeline_state(
        self, batch_id: str, timeout: float | None = None
    ) -> pb.GetBatchPipelineStateResponse:
        request = pb.GetBatchPipelineStateRequest(batch_id=batch_id)
        return await self._unary(self.stub.GetBatchPipelineState, request, timeout)

    async def reopen_essays(
        self,
        batch_id: str,
        run_id: str,
        attempt: int,
        steps: Sequence[str],
        timeout: float | None = None,
    ) -> pb.ReopenEssaysResponse:
        """Reopen, at ``attempt`` (2 or more) of ``run_id``, every essay of ``steps`` that failed
        or has no outcome; per step, the essays open at the attempt. What RetryRun does at the
        conductor."""
        request = pb.ReopenEssaysRequest(
            batch_id=batch_id, run_id=run_id, attempt=attempt, steps=steps
        )
        return await self._unary(self.stub.ReopenEssays, request, timeout)

    async def expire_step(
        self,
        batch_id: str,
        step: str,
        run_id: str,
        attempt: int = 0,
        timeout: float | None = None,
    ) -> pb.ExpireStepResponse:
        """Fail with TIMED_OUT every essay of ``step`` still without an outcome for ``run_id``'s
        ``attempt`` (0 means 1); what the BatchService does when a step's deadline passes."""
        request = pb.ExpireStepRequest(batch_id=batch_id, step=step, run_id=run_id, attempt=attempt)
        return await self._unary(self.stub.ExpireStep, request, timeout)

    async def get_essay_outcomes(
        self, batch_id: str, essay_ids: Sequence[str], timeout: float | None = None
    ) -> pb.GetEssayOutcomesResponse:
        """Every step result of each of ``essay_ids`` (1 to 1,000), in request order."""
        request = pb.GetEssayOutcomesRequest(batch_id=batch_id, essay_ids=essay_ids)
        return await self._unary(self.stub.GetEssayOutcomes, request, timeout)
