"""Essay reads at the edge: details round-trip, page tokens are bound to their batch, requests
are parsed with their defaults, and EssayNotFound has its status."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2 as details
from hypothesis import given
from hypothesis import strategies as st

from batch_server.api import convert
from batch_server.api.status import TABLE
from batch_server.domain import essays
from batch_server.domain.errors import EssayNotFound
from batch_server.domain.essays import (
    EssayCursor,
    EssayDetail,
    EssayStepResult,
    EssayTexts,
    EssayView,
    Outcome,
)
from batch_server.domain.model import Essay
from batch_server.domain.paging import InvalidPageToken
from generated.huleedu.batch.v1 import batch_pb2 as pb
from mesh.errors import InvalidArgument

ids = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)
texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
results = st.builds(
    EssayStepResult,
    step=ids,
    outcome=st.none() | st.sampled_from(Outcome),
    error_code=texts,
    error_message=texts,
    output_storage_id=texts,
    attempt=st.integers(0, 2**32 - 1),
    run_id=texts,
)
essay_values = st.builds(Essay, ids, texts, ids, ids)


@given(texts, essay_values, st.lists(results, max_size=4).map(tuple), texts, texts)
def test_an_essay_detail_round_trips_in_either_view(
    batch_id: str,
    essay: Essay,
    steps: tuple[EssayStepResult, ...],
    original: str,
    current: str,
) -> None:
    basic = EssayDetail(batch_id, essay, steps)
    rendered = convert.essay_detail_to_proto(basic)
    assert convert.essay_detail_from_proto(rendered, EssayView.BASIC) == basic
    full = EssayDetail(batch_id, essay, steps, EssayTexts(original, current))
    rendered = convert.essay_detail_to_proto(full)
    assert convert.essay_detail_from_proto(rendered, EssayView.FULL) == full


@given(ids, st.integers(0, 10_000))
def test_a_page_token_round_trips_for_its_batch(batch_id: str, position: int) -> None:
    token = essays.encode_token(EssayCursor(batch_id, position))
    assert token.isascii()
    assert essays.decode_token(token, batch_id) == EssayCursor(batch_id, position)
    with pytest.raises(InvalidPageToken, match="another batch"):
        essays.decode_token(token, batch_id + "x")


BATCH_LISTING_TOKEN = "WzEsIjIwMjYtMDEtMDFUMDA6MDA6MDArMDA6MDAiLCJiMSJd"  # ListBatches' (version 1)


@pytest.mark.parametrize(
    "token",
    [
        "!!",
        "e30",
        BATCH_LISTING_TOKEN,
        "WyJiYXRjaGVzIiwxLCJiMSIsMF0",  # ["batches",1,"b1",0]
        "WyJlc3NheXMiLDEsImIxIix0cnVlXQ",  # ["essays",1,"b1",true]
        "WyJlc3NheXMiLDEsImIxIiwtMV0",  # ["essays",1,"b1",-1]
        "WyJlc3NheXMiLDEsImIxIiwiMSJd",  # ["essays",1,"b1","1"]
        "WyJlc3NheXMiLDIsImIxIiwxXQ",  # ["essays",2,"b1",1]
    ],
)
def test_foreign_page_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidPageToken, match="not a page token"):
        essays.decode_token(token, "b1")


def test_page_sizes() -> None:
    for size, expected in ((0, 100), (1, 1), (1000, 1000)):
        request = pb.ListEssaysRequest(batch_id="b1", page_size=size)
        assert convert.list_essays_from_proto(request)[1] == expected
    for bad in (-1, 1001):
        with pytest.raises(InvalidArgument) as caught:
            convert.list_essays_from_proto(pb.ListEssaysRequest(batch_id="b1", page_size=bad))
        [violation] = caught.value.violations
        assert (violation.field, violation.description) == (
            "page_size",
            "must be between 1 and 1,000 (or 0 for 100)",
        )


def test_views_default_per_method() -> None:
    assert convert.get_essay_from_proto(pb.GetEssayRequest(essay_id="e1")) == (
        "e1",
        "",
        EssayView.FULL,
    )
    basic = pb.GetEssayRequest(essay_id="e1", batch_id="b1", view=pb.ESSAY_VIEW_BASIC)
    assert convert.get_essay_from_proto(basic) == ("e1", "b1", EssayView.BASIC)
    assert convert.list_essays_from_proto(pb.ListEssaysRequest(batch_id="b1")) == (
        "b1",
        100,
        None,
        EssayView.BASIC,
    )
    token = essays.encode_token(EssayCursor("b1", 99))
    full = pb.ListEssaysRequest(batch_id="b1", page_token=token, view=pb.ESSAY_VIEW_FULL)
    assert convert.list_essays_from_proto(full) == (
        "b1",
        100,
        EssayCursor("b1", 99),
        EssayView.FULL,
    )
    with pytest.raises(InvalidArgument) as caught:
        convert.list_essays_from_proto(pb.ListEssaysRequest(batch_id="b2", page_token=token))
    assert [v.field for v in caught.value.violations] == ["page_token"]


def test_essay_not_found_is_not_found_with_the_essay_named() -> None:
    status = TABLE.to_status(EssayNotFound("e1", "b1"))
    assert status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "batch 'b1' has no essay 'e1'" in str(EssayNotFound("e1", "b1"))
    info, resource = details.ErrorInfo(), details.ResourceInfo()
    status.details[0].Unpack(info)
    status.details[1].Unpack(resource)
    assert info.reason == "ESSAY_NOT_FOUND"
    assert (resource.resource_type, resource.resource_name) == ("essay", "e1")
