"""Converters round-trip; page tokens round-trip; every error has its status; event shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch_server import events
from batch_server.api import convert
from batch_server.api.status import TABLE
from batch_server.domain import errors
from batch_server.domain.model import (
    Batch,
    BatchMetadata,
    Dispatch,
    Essay,
    EssayRef,
    PipelineRun,
    RunStatus,
    RunStep,
    StepStatus,
)
from batch_server.domain.paging import (
    InvalidPageToken,
    PageCursor,
    decode_token,
    encode_token,
    page_size,
)
from generated.huleedu.batch.v1 import batch_pb2 as pb
from mesh.errors import InvalidArgument
from mesh.events.topics import EventKind

ids = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)
times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
metadata = st.builds(
    BatchMetadata,
    name=st.text(max_size=20),
    course_code=st.text(max_size=8),
    language=st.sampled_from(["en", "sv", "sv-SE"]),
    flags=st.dictionaries(ids, st.booleans(), max_size=3),
    labels=st.dictionaries(ids, st.text(max_size=10), max_size=3),
)
batches = st.builds(
    Batch,
    batch_id=ids,
    essays=st.lists(st.builds(Essay, ids, st.text(max_size=10), ids, ids), max_size=5).map(tuple),
    metadata=metadata,
    created_at=times,
)
run_steps = st.builds(
    RunStep,
    name=ids,
    command=st.just(""),
    depends_on=st.just(()),
    status=st.sampled_from(StepStatus),
    succeeded=st.integers(0, 2**32 - 1),
    failed=st.integers(0, 2**32 - 1),
    total=st.integers(0, 2**32 - 1),
)
runs = st.builds(
    PipelineRun,
    run_id=ids,
    batch_id=ids,
    pipeline=ids,
    status=st.sampled_from(RunStatus),
    definition_version=st.text(max_size=16),
    steps=st.lists(run_steps, max_size=5).map(tuple),
    created_at=times,
    finished_at=st.none() | times,
)


@given(batches)
def test_a_batch_round_trips(batch: Batch) -> None:
    assert convert.batch_from_proto(convert.batch_to_proto(batch)) == batch


@given(runs)
def test_a_run_round_trips(run: PipelineRun) -> None:
    assert convert.run_from_proto(convert.run_to_proto(run)) == run


@given(times, ids)
def test_a_page_token_round_trips(when: datetime, batch_id: str) -> None:
    cursor = PageCursor(when, batch_id)
    token = encode_token(cursor)
    assert decode_token(token) == cursor
    assert token.isascii()


@pytest.mark.parametrize("token", ["", "!!", "e30", "WzIsIngiLCJ5Il0", "WzEsIjIwMjUiLCJ4Il0"])
def test_foreign_page_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidPageToken):
        decode_token(token)


def test_page_sizes() -> None:
    assert page_size(0) == 50
    assert page_size(1) == 1
    assert page_size(500) == 500
    for bad in (-1, 501):
        with pytest.raises(ValueError, match="between 1 and 500"):
            page_size(bad)


def test_every_status_has_its_proto_value() -> None:
    assert set(convert.RUN_STATUS_TO_PROTO) == set(RunStatus)
    assert set(convert.STEP_STATUS_TO_PROTO) == set(StepStatus)
    assert pb.RUN_STATUS_UNSPECIFIED not in convert.RUN_STATUS_FROM_PROTO


def test_create_batch_request_parsing() -> None:
    request = pb.CreateBatchRequest(
        request_id="r1",
        essays=[pb.EssayInput(text="Hello", client_ref="a.txt")],
        metadata=pb.BatchMetadata(name="n", flags={"prompt_attached": True}),
    )
    request_id, essays, meta = convert.create_batch_from_proto(request)
    assert request_id == "r1"
    assert [(e.text, e.client_ref) for e in essays] == [("Hello", "a.txt")]
    assert meta.language == "en"
    assert dict(meta.flags) == {"prompt_attached": True}
    with pytest.raises(InvalidArgument) as caught:
        convert.create_batch_from_proto(pb.CreateBatchRequest())
    assert [v.field for v in caught.value.violations] == ["essays"]


ERRORS: list[tuple[Exception, grpc.StatusCode]] = [
    (errors.BatchNotFound("b"), grpc.StatusCode.NOT_FOUND),
    (errors.RunNotFound("b", "r"), grpc.StatusCode.NOT_FOUND),
    (errors.ContentNotFound("c"), grpc.StatusCode.NOT_FOUND),
    (errors.UnknownPipeline("p"), grpc.StatusCode.NOT_FOUND),
    (errors.RunConflict("b", "r"), grpc.StatusCode.ABORTED),
    (errors.RequestIdReused("q", "x"), grpc.StatusCode.INVALID_ARGUMENT),
    (
        errors.PipelineRejected("p", "no", [errors.Precondition("FLAG", "f", "unset")]),
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    (errors.UnknownCommand("s", "c"), grpc.StatusCode.FAILED_PRECONDITION),
    (errors.InvalidCompletion("x"), grpc.StatusCode.INTERNAL),
    (errors.ConductorFailed("INTERNAL", "x"), grpc.StatusCode.INTERNAL),
]


@pytest.mark.parametrize(("error", "code"), ERRORS, ids=[type(e).__name__ for e, _ in ERRORS])
def test_every_domain_error_has_a_status(error: Exception, code: grpc.StatusCode) -> None:
    status = TABLE.to_status(error)
    assert status.code == code.value[0]
    if not isinstance(error, errors.InvalidCompletion):  # never reaches an RPC: Kafka only
        assert TABLE.rule_for(error) is not None
        assert len(status.details) >= 2  # ErrorInfo plus the typed detail


def test_every_domain_error_is_permanent() -> None:
    assert all(isinstance(e, errors.BatchError) and not e.retriable for e, _ in ERRORS)


def test_step_commands_have_deterministic_ids_and_their_command_topic() -> None:
    batch = Batch("b1", (Essay("e1", "", "s1", "s1"),), BatchMetadata(course_code="ENG5"), T0)
    run = PipelineRun("r1", "b1", "nlp", RunStatus.RUNNING, "v1", (), T0, correlation_id="c1")
    dispatch = Dispatch("r1", "b1", "nlp", "nlp", (EssayRef("e1", "s2"),))
    first = events.step_command(dispatch, batch, run, T0)
    again = events.step_command(dispatch, batch, run, T0 + timedelta(seconds=1))
    assert first.envelope.event_id == again.envelope.event_id
    assert first.kind is EventKind.NLP_COMMAND
    assert first.envelope.correlation_id == "c1"
    command = first.envelope.step_command
    assert dict(command.parameters)["course_code"] == "ENG5"
    assert [(e.essay_id, e.text_storage_id) for e in command.essays] == [("e1", "s2")]
    with pytest.raises(errors.UnknownCommand):
        events.command_kind("x", "no-such-command")


T0 = datetime(2025, 5, 25, 12, 0, tzinfo=UTC)
