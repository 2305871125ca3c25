"""Which scope each ``BatchService`` RPC needs: the BatchService's one scope table.

Beside the error table, applied by the same wrapper (``mesh.grpc.interceptor``); the scopes
are ``mesh.security.scopes.Scope``.
"""

from __future__ import annotations

from generated.huleedu.batch.v1 import batch_pb2 as pb
from mesh.security.scopes import Scope, scope_table

SCOPES = scope_table(
    pb.DESCRIPTOR.services_by_name["BatchService"],
    {
        "TriggerSpellcheck": Scope.BATCHES_WRITE,
        "CreateBatch": Scope.BATCHES_WRITE,
        "StartPipeline": Scope.BATCHES_WRITE,
        "GetBatchStatus": Scope.BATCHES_READ,
        "ListBatches": Scope.BATCHES_READ,
        "WatchBatch": Scope.BATCHES_READ,
        "CancelRun": Scope.BATCHES_WRITE,
        "RetryRun": Scope.BATCHES_WRITE,
        "UpdateBatch": Scope.BATCHES_WRITE,
        "GetEssay": Scope.BATCHES_READ,
        "ListEssays": Scope.BATCHES_READ,
    },
)
