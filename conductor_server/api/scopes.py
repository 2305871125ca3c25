"""Which scope each ``PipelineConductorService`` RPC needs: the conductor's one scope table.

Beside the error table, applied by the same wrapper (``mesh.grpc.interceptor``); the scopes
are ``mesh.security.scopes.Scope``. ``ResolvePipeline`` is a read even without ``dry_run``:
the ``PhaseSkipped`` events it then emits report, they change no state, and operators need dry
runs without the right to register batches. ``ReopenEssays`` and ``ExpireStep`` change a
batch's counts for a run the BatchService controls: they need its scope, ``batches:register``.
"""

from __future__ import annotations

from generated.huleedu.conductor.v1 import conductor_pb2 as pb
from mesh.security.scopes import Scope, scope_table

SCOPES = scope_table(
    pb.DESCRIPTOR.services_by_name["PipelineConductorService"],
    {
        "ListPipelines": Scope.PIPELINES_READ,
        "GetPipeline": Scope.PIPELINES_READ,
        "RegisterBatch": Scope.BATCHES_REGISTER,
        "ResolvePipeline": Scope.PIPELINES_READ,
        "ValidatePrerequisites": Scope.PIPELINES_READ,
        "RecordStepOutcome": Scope.OUTCOMES_RECORD,
        "GetBatchPipelineState": Scope.PIPELINES_READ,
        "ReopenEssays": Scope.BATCHES_REGISTER,
        "ExpireStep": Scope.BATCHES_REGISTER,
        "GetEssayOutcomes": Scope.PIPELINES_READ,
    },
)
