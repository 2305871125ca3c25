"""Converters round-trip; page tokens round-trip; every error has its status; event shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

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
    BatchSummary,
    Dispatch,
    Essay,
    EssayRef,
    PipelineRun,
    RunStatus,
    RunStep,
    StepStatus,
)
from batch_server.domain.paging import (
    UNFILTERED,
    BatchFilter,
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


names = st.text("abcdefghij_", min_size=1, max_size=8)


def in_year(year: int) -> st.SearchStrategy[datetime]:
    return st.datetimes(
        min_value=datetime(year, 1, 1), max_value=datetime(year, 12, 31), timezones=st.just(UTC)
    )


filters = st.builds(
    BatchFilter,
    latest_run_statuses=st.frozensets(st.none() | st.sampled_from(RunStatus)),
    # label values: what a proto string can hold (no surrogates), and no NUL (refused earlier)
    labels=st.dictionaries(
        names,
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=9),
    ),
    created_after=st.none() | in_year(1990),
    created_before=st.none() | in_year(2100),
)


def list_request(wanted: BatchFilter, token: str = "") -> pb.ListBatchesRequest:
    """The ListBatches request for ``wanted`` (what a client sends)."""
    request = pb.ListBatchesRequest(
        page_token=token,
        latest_run_statuses=[
            convert.RUN_STATUS_TO_PROTO[s] if s is not None else pb.RUN_STATUS_UNSPECIFIED
            for s in wanted.latest_run_statuses
        ],
        labels=dict(wanted.labels),
    )
    for field, value in (
        ("created_after", wanted.created_after),
        ("created_before", wanted.created_before),
    ):
        if value is not None:
            getattr(request, field).CopyFrom(convert.timestamp_to_proto(value))
    return request


@given(times, ids, filters)
def test_a_page_token_round_trips_for_its_filters(
    when: datetime, batch_id: str, wanted: BatchFilter
) -> None:
    cursor = PageCursor(when, batch_id)
    token = encode_token(cursor, wanted)
    assert decode_token(token, wanted) == cursor
    assert token.isascii()
    assert convert.list_from_proto(list_request(wanted, token)) == (50, cursor, wanted)


@given(filters, filters)
def test_a_page_token_is_refused_for_other_filters(first: BatchFilter, second: BatchFilter) -> None:
    token = encode_token(PageCursor(datetime(2026, 1, 1, tzinfo=UTC), "b1"), first)
    if first == second:
        assert first.fingerprint == second.fingerprint
        return
    assert first.fingerprint != second.fingerprint
    with pytest.raises(InvalidPageToken, match="other filters"):
        decode_token(token, second)


def test_equal_filters_have_one_fingerprint_whatever_the_order_or_time_zone() -> None:
    when = datetime(2026, 1, 1, 12, tzinfo=UTC)
    a = BatchFilter(frozenset({RunStatus.FAILED, None}), {"a": "1", "b": "2"}, when)
    b = BatchFilter(
        frozenset({None, RunStatus.FAILED}),
        {"b": "2", "a": "1"},
        when.astimezone(timezone(timedelta(hours=2))),
    )
    assert a.fingerprint == b.fingerprint


def test_a_token_of_an_unfiltered_listing_from_before_filters_still_pages() -> None:
    legacy = (
        "WzEsIjIwMjYtMDEtMDFUMDA6MDA6MDArMDA6MDAiLCJiMSJd"  # [1, "2026-01-01T00:00:00+00:00", "b1"]
    )
    cursor = decode_token(legacy, UNFILTERED)
    assert cursor == PageCursor(datetime(2026, 1, 1, tzinfo=UTC), "b1")
    with pytest.raises(InvalidPageToken):
        decode_token(legacy, BatchFilter(labels={"a": "1"}))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "!!",
        "e30",
        "WzIsIngiLCJ5Il0",
        "WzEsIjIwMjUiLCJ4Il0",
        "WzIsIjIwMjYtMDEtMDFUMDA6MDA6MDArMDA6MDAiLCJiMSJd",
    ],
)
def test_foreign_page_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidPageToken):
        decode_token(token, UNFILTERED)


def test_a_filter_selects_by_newest_run_labels_and_creation_time() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    summary = BatchSummary("b1", "", 1, when, RunStatus.FAILED, {"term": "spring", "room": "4"})
    fresh = BatchSummary("b2", "", 1, when, None, {})
    assert BatchFilter().matches(summary)
    assert BatchFilter().matches(fresh)
    assert BatchFilter(frozenset({RunStatus.FAILED})).matches(summary)
    assert not BatchFilter(frozenset({RunStatus.FAILED})).matches(fresh)
    assert BatchFilter(frozenset({None, RunStatus.COMPLETED})).matches(fresh)
    assert not BatchFilter(frozenset({None, RunStatus.COMPLETED})).matches(summary)
    assert BatchFilter(labels={"term": "spring"}).matches(summary)
    assert not BatchFilter(labels={"term": "spring", "room": "5"}).matches(summary)
    assert not BatchFilter(labels={"term": ""}).matches(fresh)  # a missing label is no match
    assert BatchFilter(created_after=when).matches(summary)  # inclusive
    assert not BatchFilter(created_before=when).matches(summary)  # exclusive
    assert BatchFilter(created_before=when + timedelta(microseconds=1)).matches(summary)


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        (lambda r: r.latest_run_statuses.append(99), ["latest_run_statuses[0]"]),
        (lambda r: r.labels.update({"bad key": "v"}), ["labels['bad key']"]),
        (lambda r: r.labels.update({"k": "v" * 257}), ["labels['k']"]),
        (lambda r: setattr(r.created_after, "seconds", 10**12), ["created_after"]),
        (
            lambda r: (r.created_after.FromSeconds(100), r.created_before.FromSeconds(100)),
            ["created_after"],
        ),
        (
            lambda r: (r.created_after.FromSeconds(101), r.created_before.FromSeconds(100)),
            ["created_after"],
        ),
    ],
)
def test_bad_filters_are_invalid_arguments(change: Any, fields: list[str]) -> None:
    request = pb.ListBatchesRequest()
    change(request)
    with pytest.raises(InvalidArgument) as caught:
        convert.list_from_proto(request)
    assert [v.field for v in caught.value.violations] == fields


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
