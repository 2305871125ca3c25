"""One vocabulary of ErrorInfo reasons: the enum, docs/errors.md, the protos' comments and both
servers' status tables agree."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from batch_server.api.status import TABLE as BATCH_TABLE
from batch_server.domain import errors as batch_errors
from conductor_server.api.status import TABLE as CONDUCTOR_TABLE
from conductor_server.domain import errors as conductor_errors
from conductor_server.domain.model import Outcome
from conductor_server.store import errors as state_errors
from generated.huleedu.batch.v1 import batch_pb2
from generated.huleedu.conductor.v1 import conductor_pb2
from generated.huleedu.events.v1 import events_pb2
from mesh.errors import BackendUnavailable, FieldViolation, InvalidArgument
from mesh.grpc.reasons import Reason
from mesh.grpc.status import StatusTable

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "errors.md").read_text()
_ROW = re.compile(r"^\| `([A-Z_]+)` \| ([A-Z_]+) \| ([^|]+?) \|", re.MULTILINE)

# Upper-case names in the protos' comments that are not reasons: settings and error codes.
NOT_REASONS = {
    "MAX_MESSAGE_BYTES",
    "MAX_STREAMS_PER_PRINCIPAL",
    "RATE_LIMITS",
    "TIMED_OUT",  # ErrorDetail.code of a timed-out essay
    "SPELLCHECK_FAILED",  # an example ErrorDetail.code
}


def test_the_document_lists_every_reason_with_its_code_and_meaning() -> None:
    rows = _ROW.findall(DOC)
    assert [r[0] for r in rows] == [r.value for r in Reason]  # each once, in the enum's order
    for name, code, meaning in rows:
        reason = Reason[name]
        assert (code, meaning) == (reason.code.name, reason.meaning), name


def _comment_names() -> set[str]:
    found: set[str] = set()
    for proto in (ROOT / "protos" / "huleedu").rglob("*.proto"):
        for line in proto.read_text().splitlines():
            _, slashes, comment = line.partition("//")
            if slashes:
                found |= set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", comment))
    return found


def _enum_values() -> set[str]:
    values: set[str] = set()
    for module in (batch_pb2, conductor_pb2, events_pb2):
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            values |= {v.name for v in enum.values}
    return values


def test_every_reason_the_protos_name_is_in_the_vocabulary() -> None:
    codes = {code.name for code in grpc.StatusCode}
    named = _comment_names() - codes - _enum_values() - NOT_REASONS
    assert named, "the comments name reasons"
    assert named <= {r.value for r in Reason}, named - {r.value for r in Reason}


ERRORS: list[tuple[StatusTable, BaseException, Reason]] = [
    (BATCH_TABLE, batch_errors.BatchNotFound("b"), Reason.BATCH_NOT_FOUND),
    (BATCH_TABLE, batch_errors.RunNotFound("b", "r"), Reason.RUN_NOT_FOUND),
    (BATCH_TABLE, batch_errors.UnknownPipeline("p"), Reason.PIPELINE_NOT_FOUND),
    (BATCH_TABLE, batch_errors.ContentNotFound("c"), Reason.CONTENT_NOT_FOUND),
    (BATCH_TABLE, batch_errors.RunConflict("b", "r"), Reason.ACTIVE_RUN_EXISTS),
    (BATCH_TABLE, batch_errors.RequestIdReused("q", "x"), Reason.REQUEST_ID_REUSED),
    (BATCH_TABLE, batch_errors.UnknownFlag({"x": "unknown flag 'x'"}), Reason.UNKNOWN_FLAG),
    (BATCH_TABLE, batch_errors.PipelineRejected("p", "", []), Reason.PREREQUISITES_NOT_MET),
    (BATCH_TABLE, batch_errors.UnknownCommand("s", "c"), Reason.UNKNOWN_COMMAND),
    (BATCH_TABLE, batch_errors.ConductorFailed("INTERNAL", "x"), Reason.CONDUCTOR_FAILED),
    (BATCH_TABLE, RuntimeError("a bug"), Reason.INTERNAL),
    (CONDUCTOR_TABLE, conductor_errors.UnknownPipeline("p"), Reason.PIPELINE_NOT_FOUND),
    (CONDUCTOR_TABLE, conductor_errors.UnknownTarget("p"), Reason.PIPELINE_NOT_FOUND),
    (CONDUCTOR_TABLE, conductor_errors.UnknownStep("s"), Reason.STEP_NOT_FOUND),
    (CONDUCTOR_TABLE, state_errors.UnknownStep("b", "s"), Reason.STEP_NOT_FOUND),
    (CONDUCTOR_TABLE, state_errors.UnknownBatch("b"), Reason.BATCH_NOT_FOUND),
    (CONDUCTOR_TABLE, conductor_errors.UnknownFlag(("x",), ("y",)), Reason.UNKNOWN_FLAG),
    (
        CONDUCTOR_TABLE,
        conductor_errors.PreconditionFailed("nlp", ()),
        Reason.PREREQUISITES_NOT_MET,
    ),
    (CONDUCTOR_TABLE, state_errors.EssayNotExpected("b", "s", "e"), Reason.ESSAY_NOT_EXPECTED),
    (
        CONDUCTOR_TABLE,
        state_errors.ConflictingOutcome("b", "s", "e", Outcome.SUCCEEDED, Outcome.FAILED),
        Reason.OUTCOME_CONFLICT,
    ),
    (CONDUCTOR_TABLE, state_errors.RegistrationConflict("b"), Reason.REGISTRATION_CONFLICT),
    (CONDUCTOR_TABLE, state_errors.InvalidRegistration("b", "no essays"), Reason.INVALID_ARGUMENT),
    (CONDUCTOR_TABLE, InvalidArgument([FieldViolation("f", "bad")]), Reason.INVALID_ARGUMENT),
    (CONDUCTOR_TABLE, BackendUnavailable("redis", "down"), Reason.BACKEND_UNAVAILABLE),
    (CONDUCTOR_TABLE, KeyError("a bug"), Reason.INTERNAL),
]


@pytest.mark.parametrize(
    ("table", "error", "reason"),
    ERRORS,
    ids=[f"{type(e).__name__}-{r}" for _, e, r in ERRORS],
)
def test_each_error_has_its_reason_and_the_reasons_code(
    table: StatusTable, error: BaseException, reason: Reason
) -> None:
    status = table.to_status(error)
    assert status.code == reason.code.value[0]
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == reason
    assert info.domain in ("batch.huleedu", "conductor.huleedu")
    if reason is Reason.INTERNAL:
        assert status.message == "internal error"  # nothing of the bug leaks
        assert "type" not in info.metadata
    else:
        assert info.metadata["type"] == type(error).__name__


def test_every_not_found_error_has_a_reason_of_its_own() -> None:
    """A new ``NotFound`` needs its own rule: there is no generic NOT_FOUND reason."""
    for table, root in (
        (BATCH_TABLE, batch_errors.NotFound),
        (CONDUCTOR_TABLE, conductor_errors.NotFound),
    ):
        for error in root.__subclasses__():
            rule = table.rule_for(error.__new__(error))
            assert rule is not None, error
            assert rule.reason.endswith("_NOT_FOUND"), error
