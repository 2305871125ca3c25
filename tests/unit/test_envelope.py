"""The envelope codec: build, encode/decode round trip, typed permanent errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generated.huleedu.events.v1 import events_pb2
from mesh.correlation import bound
from mesh.events import envelope as codec
from mesh.events.retry import is_retriable


def outcome(batch_id: str = "b1") -> events_pb2.EssayStepOutcome:
    return events_pb2.EssayStepOutcome(
        batch_id=batch_id,
        step="spellcheck",
        essay_id="e1",
        outcome=events_pb2.STEP_OUTCOME_SUCCEEDED,
    )


def test_build_fills_every_envelope_field() -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    env = codec.build(
        outcome(),
        source_service="svc",
        event_id="id-1",
        correlation_id="corr-1",
        timestamp=when,
        metadata={"user_id": "u"},
    )
    assert env.event_id == "id-1"
    assert env.event_type == "huleedu.events.v1.EssayStepOutcome"
    assert env.event_timestamp.ToDatetime(tzinfo=UTC) == when
    assert env.source_service == "svc"
    assert env.schema_version == codec.SCHEMA_VERSION == 1
    assert env.correlation_id == "corr-1"
    assert dict(env.metadata) == {"user_id": "u"}
    assert env.WhichOneof("payload") == "essay_step_outcome"
    assert env.essay_step_outcome == outcome()


def test_correlation_id_comes_from_the_context_then_a_fresh_one() -> None:
    with bound("from-context"):
        assert codec.build(outcome(), source_service="s").correlation_id == "from-context"
    first = codec.build(outcome(), source_service="s")
    second = codec.build(outcome(), source_service="s")
    assert first.correlation_id
    assert first.correlation_id != second.correlation_id
    assert first.event_id != second.event_id


def test_a_message_that_is_not_a_payload_is_refused() -> None:
    with pytest.raises(TypeError):
        codec.build(events_pb2.EntityRef(entity_id="x"), source_service="s")


@given(batch_id=st.text(min_size=1, max_size=30), essay=st.text(max_size=30))
def test_decode_inverts_encode(batch_id: str, essay: str) -> None:
    payload = outcome(batch_id)
    payload.essay_id = essay
    env = codec.build(payload, source_service="s")
    decoded = codec.decode(codec.encode(env))
    assert decoded == env
    assert codec.payload_of(decoded) == payload
    assert codec.partition_key(decoded) == batch_id


@pytest.mark.parametrize("data", [b"", None, b"\xff\xff\xff\xff", b"\x0a\x05ab"])
def test_garbage_is_undecodable(data: bytes | None) -> None:
    with pytest.raises(codec.UndecodableEnvelope) as caught:
        codec.decode(data)
    assert not is_retriable(caught.value)


def test_an_envelope_without_payload_is_invalid() -> None:
    env = events_pb2.EventEnvelope(event_id="x", event_type="huleedu.events.v1.BatchCreated")
    with pytest.raises(codec.InvalidEnvelope) as caught:
        codec.decode(env.SerializeToString())
    assert caught.value.reason == "no payload set"
    assert not is_retriable(caught.value)


@pytest.mark.parametrize(
    "event_type", ["huleedu.events.v1.BatchCreated", "huleedu.events.v1.Unknown", ""]
)
def test_an_event_type_that_does_not_match_the_payload_is_invalid(event_type: str) -> None:
    env = codec.build(outcome(), source_service="s")
    env.event_type = event_type
    with pytest.raises(codec.InvalidEnvelope, match="does not match"):
        codec.decode(codec.encode(env))


def test_an_envelope_without_event_id_is_invalid() -> None:
    env = codec.build(outcome(), source_service="s")
    env.event_id = ""
    with pytest.raises(codec.InvalidEnvelope, match="event_id"):
        codec.decode(codec.encode(env))


def test_a_payload_the_consumer_does_not_accept_is_unexpected() -> None:
    env = codec.build(events_pb2.BatchCreated(batch_id="b"), source_service="s")
    with pytest.raises(codec.UnexpectedPayload) as caught:
        codec.decode(codec.encode(env), accept={"essay_step_outcome"})
    assert caught.value.payload == "batch_created"
    assert caught.value.event_id == env.event_id
    assert not is_retriable(caught.value)
    assert codec.decode(codec.encode(env), accept={"batch_created"}) == env


def test_headers_describe_the_envelope() -> None:
    env = codec.build(outcome(), source_service="s", event_id="e", correlation_id="c")
    assert dict(codec.headers(env)) == {
        "event_type": b"huleedu.events.v1.EssayStepOutcome",
        "event_id": b"e",
        "correlation_id": b"c",
        "content-type": b"application/x-protobuf",
        "schema_version": b"1",
    }


def test_partition_key_of_a_spellcheck_request_is_its_batch() -> None:
    request = events_pb2.EssaySpellcheckRequested(
        entity_ref=events_pb2.EntityRef(entity_id="essay", parent_id="batch")
    )
    assert codec.partition_key(codec.build(request, source_service="s")) == "batch"
    request.entity_ref.parent_id = ""
    assert codec.partition_key(codec.build(request, source_service="s")) == "essay"
