"""Scopes: what a principal may do. Every RPC belongs to exactly one.

Each server declares its table (``conductor_server/api/scopes.py``, ``batch_server/api/scopes.py``,
beside the error table) with ``scope_table``, which refuses a table that misses an RPC of the
service or names one it does not have; the RPC wrapper refuses to serve a method without a scope.

=====================  =====================================================================
scope                  RPCs
=====================  =====================================================================
batches:read           BatchService GetBatchStatus, ListBatches, WatchBatch, GetEssay,
                       ListEssays
batches:write          BatchService CreateBatch, StartPipeline, TriggerSpellcheck
pipelines:read         Conductor ListPipelines, GetPipeline, ResolvePipeline,
                       ValidatePrerequisites, GetBatchPipelineState
batches:register       Conductor RegisterBatch (the BatchService's own identity)
outcomes:record        Conductor RecordStepOutcome (workers and ELS only)
deadletters:admin      dead-letter administration (no RPC yet: ``huleedu dlq`` talks to Kafka,
                       whose own credentials guard it)
=====================  =====================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Scope(StrEnum):
    BATCHES_READ = "batches:read"
    BATCHES_WRITE = "batches:write"
    PIPELINES_READ = "pipelines:read"
    BATCHES_REGISTER = "batches:register"
    OUTCOMES_RECORD = "outcomes:record"
    DEAD_LETTERS_ADMIN = "deadletters:admin"


ScopeTable = Mapping[str, Scope]  # "/package.Service/Method" -> the scope it needs


def scope_table(service: Any, scopes: Mapping[str, Scope]) -> dict[str, Scope]:
    """The table of ``service`` (a protobuf ``ServiceDescriptor``) keyed by full method name.

    ``scopes`` maps each method name of the service to its scope; a method without one, or a
    name the service does not have, is a ``ValueError`` (at import: the server cannot start).
    """
    methods = [method.name for method in service.methods]
    missing = sorted(set(methods) - set(scopes))
    unknown = sorted(set(scopes) - set(methods))
    if missing or unknown:
        raise ValueError(
            f"scope table of {service.full_name}: no scope for {missing}, not RPCs: {unknown}"
        )
    return {f"/{service.full_name}/{name}": scopes[name] for name in methods}
