"""The Python SDK's public surface is pinned: a change to it is a decision, seen in review.

Changing what is pinned here changes what users' code calls: add to it freely, but remove or
rename only with a new major version of the SDK (see CHANGELOG.md).
"""

from __future__ import annotations

import dataclasses
import inspect

import clients
from clients import BatchClient, ConductorClient, RpcError, enums
from generated.huleedu.batch.v1 import batch_pb2
from generated.huleedu.conductor.v1 import conductor_pb2
from generated.huleedu.events.v1 import events_pb2

SURFACE = {
    BatchClient: {
        "IDEMPOTENT": "attribute",
        "SERVICE": "attribute",
        "cancel_run": "(self, batch_id: 'str', run_id: 'str', reason: 'str' = '', "
        "timeout: 'float | None' = None) -> 'pb.PipelineRun'",
        "close": "(self) -> 'None'",
        "create_batch": "(self, texts: 'Sequence[str]', request_id: 'str' = '', name: 'str' = '', "
        "flags: 'Mapping[str, bool] | None' = None, language: 'str' = '', course_code: 'str' = '', "
        "timeout: 'float | None' = None, *, labels: 'Mapping[str, str] | None' = None) "
        "-> 'pb.Batch'",
        "get_batch_status": "(self, batch_id: 'str', timeout: 'float | None' = None) "
        "-> 'pb.GetBatchStatusResponse'",
        "get_essay": "(self, essay_id: 'str', batch_id: 'str' = '', "
        "view: 'EssayView' = EssayView.FULL, timeout: 'float | None' = None) -> 'pb.EssayDetail'",
        "iter_batches": "(self, page_size: 'int' = 100, *, statuses: 'Sequence[int]' = (), "
        "labels: 'Mapping[str, str] | None' = None, created_after: 'datetime | None' = None, "
        "created_before: 'datetime | None' = None) -> 'AsyncIterator[pb.BatchSummary]'",
        "iter_essays": "(self, batch_id: 'str', page_size: 'int' = 100, "
        "view: 'EssayView' = EssayView.BASIC) -> 'AsyncIterator[pb.EssayDetail]'",
        "list_batches": "(self, page_size: 'int' = 0, page_token: 'str' = '', "
        "timeout: 'float | None' = None, *, statuses: 'Sequence[int]' = (), "
        "labels: 'Mapping[str, str] | None' = None, created_after: 'datetime | None' = None, "
        "created_before: 'datetime | None' = None) -> 'pb.ListBatchesResponse'",
        "list_essays": "(self, batch_id: 'str', page_size: 'int' = 0, page_token: 'str' = '', "
        "view: 'EssayView' = EssayView.BASIC, timeout: 'float | None' = None) "
        "-> 'pb.ListEssaysResponse'",
        "retry_run": "(self, batch_id: 'str', run_id: 'str', steps: 'Sequence[str]' = (), "
        "request_id: 'str' = '', timeout: 'float | None' = None) -> 'pb.RetryRunResponse'",
        "start": "(self) -> 'None'",
        "start_pipeline": "(self, batch_id: 'str', pipeline: 'str', request_id: 'str' = '', "
        "timeout: 'float | None' = None) -> 'pb.StartPipelineResponse'",
        "trigger_spellcheck": "(self, text: 'str', language: 'str' = '', "
        "timeout: 'float | None' = None) -> 'pb.TriggerSpellcheckResponse'",
        "update_batch": "(self, batch_id: 'str', *, flags: 'Mapping[str, bool] | None' = None, "
        "labels: 'Mapping[str, str] | None' = None, name: 'str | None' = None, "
        "course_code: 'str | None' = None, timeout: 'float | None' = None) -> 'pb.Batch'",
        "watch_batch": "(self, batch_id: 'str', run_id: 'str' = '', "
        "timeout: 'float | None' = None, *, resume_for: 'float' = 60.0, "
        "on_resume: 'Callable[[RpcError, float], object] | None' = None) "
        "-> 'AsyncIterator[pb.WatchBatchResponse]'",
    },
    ConductorClient: {
        "IDEMPOTENT": "attribute",
        "SERVICE": "attribute",
        "close": "(self) -> 'None'",
        "expire_step": "(self, batch_id: 'str', step: 'str', run_id: 'str', attempt: 'int' = 0, "
        "timeout: 'float | None' = None) -> 'pb.ExpireStepResponse'",
        "get_batch_pipeline_state": "(self, batch_id: 'str', timeout: 'float | None' = None) "
        "-> 'pb.GetBatchPipelineStateResponse'",
        "get_essay_outcomes": "(self, batch_id: 'str', essay_ids: 'Sequence[str]', "
        "timeout: 'float | None' = None) -> 'pb.GetEssayOutcomesResponse'",
        "get_pipeline": "(self, name: 'str', timeout: 'float | None' = None) -> 'pb.Pipeline'",
        "list_pipelines": "(self, timeout: 'float | None' = None) -> 'pb.ListPipelinesResponse'",
        "record_step_outcome": "(self, batch_id: 'str', step: 'str', essay_id: 'str', "
        "succeeded: 'bool', event_id: 'str' = '', output_storage_id: 'str' = '', "
        "timeout: 'float | None' = None, *, run_id: 'str' = '', attempt: 'int' = 0, "
        "error: 'events_pb2.ErrorDetail | None' = None) -> 'pb.RecordStepOutcomeResponse'",
        "register_batch": "(self, batch_id: 'str', essay_ids: 'list[str]', "
        "flags: 'Mapping[str, bool] | None' = None, timeout: 'float | None' = None) "
        "-> 'pb.RegisterBatchResponse'",
        "reopen_essays": "(self, batch_id: 'str', run_id: 'str', attempt: 'int', "
        "steps: 'Sequence[str]', timeout: 'float | None' = None) -> 'pb.ReopenEssaysResponse'",
        "resolve_pipeline": "(self, batch_id: 'str', target: 'str', "
        "flags: 'Mapping[str, bool] | None' = None, dry_run: 'bool' = False, "
        "timeout: 'float | None' = None) -> 'pb.ResolvePipelineResponse'",
        "start": "(self) -> 'None'",
        "validate_prerequisites": "(self, batch_id: 'str', step: 'str', "
        "flags: 'Mapping[str, bool] | None' = None, timeout: 'float | None' = None) "
        "-> 'pb.ValidatePrerequisitesResponse'",
    },
    RpcError: {
        "correlation_id": "attribute",
        "detail": "(self, kind: 'type[Detail]') -> 'Detail | None'",
        "from_aio": "(exc: 'grpc.aio.AioRpcError') -> 'RpcError'",
        "reason": "attribute",
    },
}


def _surface(cls: type) -> dict[str, str]:
    """Public names ``cls`` defines or inherits from this project (not from Exception)."""
    ours = [k for k in cls.__mro__ if k.__module__.split(".")[0] in {"clients", "mesh"}]
    names = {n for k in ours for n in vars(k) if not n.startswith("_")}
    found = {}
    for name in sorted(names):
        value = getattr(cls, name)
        plain = callable(value) and not isinstance(value, type | property)
        found[name] = str(inspect.signature(value)) if plain else "attribute"
    return found


def test_the_package_exports_exactly_this() -> None:
    assert clients.__all__ == [
        "BatchClient",
        "ConductorClient",
        "Credentials",
        "EssayView",
        "OutcomeVerdict",
        "RpcError",
        "RunStatus",
        "RunStepStatus",
        "SkipReason",
        "StepOutcome",
        "StepStatus",
        "__version__",
    ]


def test_the_public_methods_and_their_signatures_are_pinned() -> None:
    for cls, expected in SURFACE.items():
        assert _surface(cls) == expected, cls.__name__
    fields = [f.name for f in dataclasses.fields(RpcError)]
    assert fields == ["code", "message", "details", "correlation_id"]


async def test_a_client_exposes_its_target_timeout_and_generated_stub() -> None:
    async with BatchClient("127.0.0.1:1", timeout=3.0) as client:
        public = {n for n in vars(client) if not n.startswith("_")}
        assert public == {"target", "timeout", "stub"}
        assert (client.target, client.timeout) == ("127.0.0.1:1", 3.0)


def test_the_enums_are_the_contracts() -> None:
    pairs = [
        (enums.RunStatus, batch_pb2.RunStatus, "RUN_STATUS_"),
        (enums.RunStepStatus, batch_pb2.RunStepStatus, "RUN_STEP_STATUS_"),
        (enums.StepStatus, conductor_pb2.StepStatus, "STEP_STATUS_"),
        (enums.StepOutcome, events_pb2.StepOutcome, "STEP_OUTCOME_"),
        (enums.SkipReason, events_pb2.SkipReason, "SKIP_REASON_"),
        (enums.EssayView, batch_pb2.EssayView, "ESSAY_VIEW_"),
        (enums.OutcomeVerdict, conductor_pb2.OutcomeVerdict, "OUTCOME_VERDICT_"),
    ]
    for ours, theirs, prefix in pairs:
        proto = {v.name.removeprefix(prefix): v.number for v in theirs.DESCRIPTOR.values}
        assert {m.name: m.value for m in ours} == proto, ours.__name__


def test_an_enum_reads_as_its_name_and_equals_the_proto_number() -> None:
    status = enums.RunStatus(batch_pb2.RUN_STATUS_COMPLETED_WITH_FAILURES)
    assert str(status) == f"{status}" == "COMPLETED_WITH_FAILURES"
    assert repr(status) == "RunStatus.COMPLETED_WITH_FAILURES"
    assert f"{status:>25}" == "  COMPLETED_WITH_FAILURES"
    assert status.value == batch_pb2.RUN_STATUS_COMPLETED_WITH_FAILURES
    assert status.terminal
    assert not enums.RunStatus.RUNNING.terminal
