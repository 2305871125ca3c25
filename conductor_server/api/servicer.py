"""``PipelineConductorService``: each method converts, awaits one use case, converts back.

Errors are not handled here: they propagate to the interceptor, which maps them through
``conductor_server.api.status.TABLE``.
"""

from __future__ import annotations

from typing import Any

import grpc

from conductor_server.api import convert
from conductor_server.service import Conductor
from generated.huleedu.conductor.v1 import conductor_pb2 as pb
from generated.huleedu.conductor.v1 import conductor_pb2_grpc
from mesh.grpc.server import Registration

Context = Any  # grpc.aio.ServicerContext; unused by the methods
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PipelineConductorService"].full_name


class ConductorServicer(conductor_pb2_grpc.PipelineConductorServiceServicer):
    def __init__(self, conductor: Conductor) -> None:
        self._conductor = conductor

    async def ListPipelines(
        self, request: pb.ListPipelinesRequest, context: Context
    ) -> pb.ListPipelinesResponse:
        catalog = self._conductor.catalog
        return pb.ListPipelinesResponse(
            pipelines=[convert.pipeline_to_proto(p, catalog) for p in catalog.pipelines],
            flags=catalog.flags,
        )

    async def GetPipeline(
        self, request: pb.GetPipelineRequest, context: Context
    ) -> pb.GetPipelineResponse:
        name = convert.name_from_proto("name", request.name)
        catalog = self._conductor.catalog
        return pb.GetPipelineResponse(
            pipeline=convert.pipeline_to_proto(catalog.pipeline(name), catalog)
        )

    async def RegisterBatch(
        self, request: pb.RegisterBatchRequest, context: Context
    ) -> pb.RegisterBatchResponse:
        batch_id, essay_ids, flags = convert.registration_from_proto(request)
        created = await self._conductor.register_batch(batch_id, essay_ids, flags)
        return pb.RegisterBatchResponse(
            batch_id=batch_id, essay_count=len(essay_ids), created=created
        )

    async def ResolvePipeline(
        self, request: pb.ResolvePipelineRequest, context: Context
    ) -> pb.ResolvePipelineResponse:
        batch_id, target, overrides = convert.resolve_from_proto(request)
        resolution = await self._conductor.resolve(batch_id, target, overrides, request.dry_run)
        return convert.resolution_to_proto(batch_id, resolution)

    async def ValidatePrerequisites(
        self, request: pb.ValidatePrerequisitesRequest, context: Context
    ) -> pb.ValidatePrerequisitesResponse:
        batch_id, step, overrides = convert.prerequisites_from_proto(request)
        await self._conductor.check_prerequisites(batch_id, step, overrides)
        return pb.ValidatePrerequisitesResponse(batch_id=batch_id, step=step)

    async def RecordStepOutcome(
        self, request: pb.RecordStepOutcomeRequest, context: Context
    ) -> pb.RecordStepOutcomeResponse:
        (result,) = await self._conductor.record_outcomes([convert.outcome_from_proto(request)])
        if result.error is not None:
            raise result.error
        return convert.record_result_to_proto(result)

    async def GetBatchPipelineState(
        self, request: pb.GetBatchPipelineStateRequest, context: Context
    ) -> pb.GetBatchPipelineStateResponse:
        state = await self._conductor.batch_state(convert.batch_id_from_proto(request.batch_id))
        return convert.batch_state_to_proto(state)

    async def ReopenEssays(
        self, request: pb.ReopenEssaysRequest, context: Context
    ) -> pb.ReopenEssaysResponse:
        batch_id, run_id, attempt, steps = convert.reopen_from_proto(request)
        return convert.reopened_to_proto(
            await self._conductor.reopen(batch_id, run_id, attempt, steps)
        )

    async def ExpireStep(
        self, request: pb.ExpireStepRequest, context: Context
    ) -> pb.ExpireStepResponse:
        batch_id, step, run_id, attempt = convert.expire_from_proto(request)
        return convert.expired_to_proto(
            await self._conductor.expire(batch_id, step, run_id, attempt)
        )

    async def GetEssayOutcomes(
        self, request: pb.GetEssayOutcomesRequest, context: Context
    ) -> pb.GetEssayOutcomesResponse:
        batch_id, essay_ids = convert.essay_outcomes_from_proto(request)
        found = await self._conductor.essay_results(batch_id, essay_ids)
        return convert.essay_outcomes_to_proto(batch_id, found)


def register(servicer: ConductorServicer) -> Registration:
    """Adds ``servicer`` to a server."""

    def add(server: grpc.aio.Server) -> None:
        conductor_pb2_grpc.add_PipelineConductorServiceServicer_to_server(servicer, server)

    return add
