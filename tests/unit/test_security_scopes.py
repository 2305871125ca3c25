"""Every RPC of both protos has exactly one scope; a table that misses one cannot be built."""

from __future__ import annotations

import pytest

from batch_server.api.scopes import SCOPES as BATCH_SCOPES
from conductor_server.api.scopes import SCOPES as CONDUCTOR_SCOPES
from mesh.security.scopes import Scope, scope_table
from tests.support.rpcs import BATCH, CONDUCTOR, RPCS


def test_every_rpc_of_both_services_has_a_scope() -> None:
    tables = {"conductor": CONDUCTOR_SCOPES, "batch": BATCH_SCOPES}
    for rpc in RPCS:
        assert isinstance(tables[rpc.server][rpc.full_name], Scope), rpc
    assert sum(len(t) for t in tables.values()) == len(RPCS)


def test_least_privilege_table() -> None:
    by_scope: dict[Scope, set[str]] = {}
    for table in (CONDUCTOR_SCOPES, BATCH_SCOPES):
        for method, scope in table.items():
            by_scope.setdefault(scope, set()).add(method.rsplit("/", 1)[1])
    assert by_scope == {
        Scope.BATCHES_READ: {
            "GetBatchStatus",
            "ListBatches",
            "WatchBatch",
            "GetEssay",
            "ListEssays",
        },
        Scope.BATCHES_WRITE: {
            "CreateBatch",
            "StartPipeline",
            "TriggerSpellcheck",
            "CancelRun",
            "RetryRun",
            "UpdateBatch",
        },
        Scope.PIPELINES_READ: {
            "ListPipelines",
            "GetPipeline",
            "ResolvePipeline",
            "ValidatePrerequisites",
            "GetBatchPipelineState",
            "GetEssayOutcomes",
        },
        Scope.BATCHES_REGISTER: {"RegisterBatch", "ReopenEssays", "ExpireStep"},
        Scope.OUTCOMES_RECORD: {"RecordStepOutcome"},
    }


def test_a_table_missing_an_rpc_or_naming_a_stranger_is_refused() -> None:
    scopes = {m.name: Scope.PIPELINES_READ for m in CONDUCTOR.methods}
    del scopes["RecordStepOutcome"]
    with pytest.raises(ValueError, match="no scope for \\['RecordStepOutcome'\\]"):
        scope_table(CONDUCTOR, scopes)
    extra = {m.name: Scope.BATCHES_READ for m in BATCH.methods} | {"Cancel": Scope.BATCHES_WRITE}
    with pytest.raises(ValueError, match="not RPCs: \\['Cancel'\\]"):
        scope_table(BATCH, extra)
