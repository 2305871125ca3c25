"""The consumer's C hot path (mesh/_fastdecode.c) against the Python codec it speeds up.

``envelope.decode`` is the rule; the C ``Decoder`` may only settle, as a ``Message``, a record
that ``decode`` accepts with the same envelope, and must settle every ordinary valid one (else
it is no faster). Everything else comes back as the record itself, in order, counted.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generated.huleedu.events.v1 import events_pb2
from mesh import envelope as codec
from mesh._fastdecode import Decoder, Message

PAYLOAD_FIELDS = sorted(codec.TYPE_BY_FIELD)
NUMBER = {f.name: f.number for f in codec.EventEnvelope.DESCRIPTOR.fields}


@dataclass
class Rec:
    """A consumed record, as the decoder reads it (only ``value`` matters)."""

    value: Any
    topic: str = "t"
    partition: int = 0
    offset: int = 0
    timestamp: int = 0
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def envelope_bytes(
    payload_field: str = "essay_step_outcome",
    *,
    event_id: str = "id-1",
    event_type: str | None = None,
    batch_id: str = "b1",
) -> bytes:
    env = codec.EventEnvelope(
        event_id=event_id,
        event_type=codec.TYPE_BY_FIELD[payload_field] if event_type is None else event_type,
        source_service="test",
        schema_version=1,
        correlation_id="c",
        metadata={"k": "v"},
    )
    payload = getattr(env, payload_field)
    if hasattr(payload, "batch_id"):
        payload.batch_id = batch_id
    else:
        payload.SetInParent()
    return env.SerializeToString()


def python_says(value: Any, accept: frozenset[str] | None) -> codec.EventEnvelope | None:
    try:
        return codec.decode(value, accept)
    except codec.EnvelopeError:
        return None


def run(decoder: Decoder, records: list[Rec]) -> tuple[list[Any], int]:
    return decoder([records])


# --- settles every ordinary valid envelope --------------------------------------------------


@given(
    payload_field=st.sampled_from(PAYLOAD_FIELDS),
    event_id=st.text(min_size=1, max_size=40),
    batch_id=st.text(max_size=40),
    accept_all=st.booleans(),
)
def test_every_valid_envelope_is_settled_in_c(
    payload_field: str, event_id: str, batch_id: str, accept_all: bool
) -> None:
    value = envelope_bytes(payload_field, event_id=event_id, batch_id=batch_id)
    accept = None if accept_all else frozenset({payload_field})
    record = Rec(value)
    items, unsettled = run(codec.poll_decoder(accept), [record])
    assert unsettled == 0
    [message] = items
    assert isinstance(message, Message)
    assert message.record is record
    assert message.envelope == codec.decode(value, accept)
    assert message.event_id == event_id


# --- never settles what decode refuses ------------------------------------------------------


def raw_field(number: int, wire_type: int, body: bytes) -> bytes:
    tag = codec_varint(number << 3 | wire_type)
    if wire_type == 2:
        return tag + codec_varint(len(body)) + body
    if wire_type == 0:
        return tag + codec_varint(int.from_bytes(body[:9] or b"\0", "little"))
    if wire_type == 1:
        return tag + body[:8].ljust(8, b"\0")
    if wire_type == 5:
        return tag + body[:4].ljust(4, b"\0")
    return tag + body  # groups and invalid wire types: whatever follows


def codec_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


valid_values = st.builds(
    envelope_bytes,
    st.sampled_from(PAYLOAD_FIELDS),
    event_id=st.sampled_from(["", "id-1", "x"]),
    event_type=st.one_of(
        st.none(),
        st.sampled_from(["", "huleedu.events.v1.BatchCreated", "huleedu.events.v1.Nope"]),
    ),
)
raw_fields = st.builds(
    raw_field,
    st.sampled_from([1, 2, 3, 4, 5, 6, 7, *range(10, 18), 18, 63, 64, 1000]),
    st.integers(0, 7),
    st.binary(max_size=24),
)


@st.composite
def wire_values(draw: st.DrawFn) -> bytes:
    """Valid envelopes, merged, cut, corrupted and extended with odd fields, and plain noise."""
    kind = draw(st.sampled_from(["noise", "merge", "cut", "flip", "extend"]))
    if kind == "noise":
        return draw(st.binary(max_size=64))
    base = draw(valid_values)
    if kind == "merge":  # concatenated messages merge: the last of each field wins
        return base + draw(st.one_of(valid_values, raw_fields))
    if kind == "cut":
        return base[: draw(st.integers(0, len(base)))]
    if kind == "flip":
        at = draw(st.integers(0, len(base) - 1))
        return base[:at] + bytes([base[at] ^ draw(st.integers(1, 255))]) + base[at + 1 :]
    parts = [base, *draw(st.lists(raw_fields, max_size=3))]
    order = draw(st.permutations(range(len(parts))))
    return b"".join(parts[i] for i in order)


accepts = st.one_of(st.none(), st.frozensets(st.sampled_from(PAYLOAD_FIELDS), max_size=3))


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(wire_values(), min_size=1, max_size=8), accept=accepts)
def test_c_settles_only_what_decode_accepts_and_returns_the_rest_in_order(
    values: list[bytes], accept: frozenset[str] | None
) -> None:
    records = [Rec(value, offset=n) for n, value in enumerate(values)]
    items, unsettled = run(codec.poll_decoder(accept), records)
    assert len(items) == len(records)
    assert unsettled == sum(not isinstance(item, Message) for item in items)
    for record, item in zip(records, items, strict=True):
        expected = python_says(record.value, accept)
        if isinstance(item, Message):
            assert expected is not None, f"C accepted what decode refuses: {record.value!r}"
            assert item.record is record
            assert item.envelope == expected
        else:
            assert item is record


def test_a_later_payload_field_overrides_an_earlier_one_as_in_protobuf() -> None:
    # Two envelopes back to back merge: the oneof holds the last payload, with the last type.
    value = envelope_bytes("batch_created") + envelope_bytes("essay_step_outcome")
    [message], unsettled = run(codec.poll_decoder({"essay_step_outcome"}), [Rec(value)])
    assert unsettled == 0
    assert message.envelope.WhichOneof("payload") == "essay_step_outcome"
    # The type of the first with the payload of the second: refused by both.
    mixed = envelope_bytes("essay_step_outcome") + raw_field(NUMBER["batch_created"], 2, b"")
    record = Rec(mixed)
    assert run(codec.poll_decoder(None), [record]) == ([record], 1)
    with pytest.raises(codec.InvalidEnvelope):
        codec.decode(mixed)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (None, "no value"),
        (b"", "empty"),
        (bytearray(envelope_bytes()), "not bytes"),
        (b"\xff\xff\xff", "garbage"),
        (envelope_bytes(event_id=""), "no event id"),
        (envelope_bytes(event_type="huleedu.events.v1.BatchCreated"), "type mismatch"),
        (envelope_bytes("batch_created"), "not accepted"),
        (envelope_bytes() + raw_field(NUMBER["event_id"], 0, b"\x01"), "known field, odd wire"),
    ],
)
def test_what_c_leaves_to_python(value: Any, why: str) -> None:
    record = Rec(value)
    items, unsettled = run(codec.poll_decoder({"essay_step_outcome"}), [record])
    assert (items, unsettled) == ([record], 1), why


def test_a_poll_keeps_partition_order_across_batches() -> None:
    good = [Rec(envelope_bytes(batch_id=f"b{n}"), offset=n) for n in range(3)]
    bad = Rec(b"garbage", offset=9)
    items, unsettled = codec.poll_decoder(None)([[good[0], bad], [], (good[1], good[2])])
    assert unsettled == 1
    records = [item.record if isinstance(item, Message) else item for item in items]
    assert records == [good[0], bad, good[1], good[2]]
    assert [isinstance(item, Message) for item in items] == [True, False, True, True]


# --- the parse callable, errors, construction -----------------------------------------------


def decoder_with(parse: Any, parse_framed: Any = None) -> Decoder:
    names = codec.TYPE_BY_FIELD
    return Decoder(
        parse,
        parse_framed or codec._parse_framed,
        NUMBER["event_id"],
        NUMBER["event_type"],
        {NUMBER[name]: full.encode() for name, full in names.items()},
        None,
    )


def refuse(data: bytes) -> Any:
    raise ValueError("no")


def test_when_the_frame_does_not_parse_each_value_is_parsed_alone() -> None:
    records = [Rec(envelope_bytes(batch_id=f"b{n}")) for n in range(3)]

    def nothing(data: bytes) -> list[codec.EventEnvelope]:
        return []  # not one envelope per value

    for framed in (refuse, nothing):
        items, unsettled = decoder_with(codec.EventEnvelope.FromString, framed)([records])
        assert unsettled == 0
        batches = [m.envelope.essay_step_outcome.batch_id for m in items if isinstance(m, Message)]
        assert batches == ["b0", "b1", "b2"]


def test_a_value_that_passes_the_scan_but_not_the_parser_is_left_to_python() -> None:
    # Invalid UTF-8 in a string field the scan does not read: upb refuses the whole frame.
    bad = Rec(envelope_bytes() + raw_field(NUMBER["source_service"], 2, b"\xff\xfe"))
    good = [Rec(envelope_bytes(batch_id=f"b{n}")) for n in range(2)]
    items, unsettled = codec.poll_decoder(None)([[good[0], bad, good[1]]])
    assert unsettled == 1
    assert items[1] is bad
    assert [items[0].record, items[2].record] == good  # type: ignore[union-attr]
    with pytest.raises(codec.UndecodableEnvelope):
        codec.decode(bad.value)


def test_a_parse_error_alone_leaves_the_record_to_python() -> None:
    record = Rec(envelope_bytes())
    assert decoder_with(refuse, refuse)([[record]]) == ([record], 1)


def test_an_interrupt_in_either_parse_propagates() -> None:
    def interrupt(data: bytes) -> Any:
        raise KeyboardInterrupt

    for parse, framed in ((codec.EventEnvelope.FromString, interrupt), (interrupt, refuse)):
        with pytest.raises(KeyboardInterrupt):
            decoder_with(parse, framed)([[Rec(envelope_bytes())]])


def test_an_envelope_outlives_the_rest_of_its_poll() -> None:
    records = [Rec(envelope_bytes(batch_id=f"b{n}")) for n in range(50)]
    items, _ = codec.poll_decoder(None)([records])
    kept = items[37]
    del items, records
    gc.collect()
    _ = [bytes(1000) for _ in range(1000)]  # reuse freed memory
    assert isinstance(kept, Message)
    assert kept.envelope.essay_step_outcome.batch_id == "b37"
    assert kept.envelope == codec.decode(envelope_bytes(batch_id="b37"))


def test_a_record_without_value_and_a_batch_that_is_not_a_sequence_raise() -> None:
    decoder = codec.poll_decoder(None)
    with pytest.raises(AttributeError):
        decoder([[object()]])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        decoder([42])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        decoder(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((codec.EventEnvelope.FromString, codec._parse_framed, 0, 2, {}, None), ValueError),
        ((codec.EventEnvelope.FromString, codec._parse_framed, 1, 64, {}, None), ValueError),
        ((codec.EventEnvelope.FromString, codec._parse_framed, 1, 2, {99: b"x"}, None), ValueError),
        (
            (codec.EventEnvelope.FromString, codec._parse_framed, 1, 2, {10: "not bytes"}, None),
            TypeError,
        ),
        (
            (codec.EventEnvelope.FromString, codec._parse_framed, 1, 2, [(10, b"x")], None),
            TypeError,
        ),
        (("not callable", codec._parse_framed, 1, 2, {}, None), TypeError),
        ((codec.EventEnvelope.FromString, "not callable", 1, 2, {}, None), TypeError),
    ],
)
def test_decoder_construction_checks_its_arguments(args: tuple[Any, ...], error: type) -> None:
    with pytest.raises(error):
        Decoder(*args)


def test_poll_decoder_refuses_an_unknown_payload_name() -> None:
    with pytest.raises(ValueError, match="essay_step_outcom"):
        codec.poll_decoder({"essay_step_outcom"})


# --- Message --------------------------------------------------------------------------------


def test_message_is_read_only_compared_by_identity_and_readable() -> None:
    env = codec.decode(envelope_bytes())
    record = Rec(b"x")
    message = Message(record, env)
    assert Message(record=record, envelope=env).envelope is env
    assert message.record is record
    assert message.event_id == "id-1"
    with pytest.raises(AttributeError):
        message.envelope = env  # type: ignore[misc]
    assert message != Message(record, env)
    assert message == message
    assert len({message, Message(record, env)}) == 2
    assert repr(message).startswith("Message(record=Rec(value=b'x'")
    with pytest.raises(TypeError):
        Message(record)  # type: ignore[call-arg]


def test_a_message_in_a_reference_cycle_is_collected() -> None:
    record = Rec(b"x")
    message = Message(record, events_pb2.EventEnvelope())
    record.extra["message"] = message  # record -> message -> record
    gone = weakref.finalize(record, lambda: None)
    del record, message
    gc.collect()
    assert not gone.alive


# --- reference counts and memory ------------------------------------------------------------


def test_no_reference_is_leaked_or_lost_on_any_path() -> None:
    values = [
        envelope_bytes(),  # settled
        envelope_bytes("batch_created"),  # parsed, not accepted
        b"\xff\xff",  # parse error
        b"",
    ]
    records = [Rec(value) for value in values]
    framed = codec.poll_decoder({"essay_step_outcome"})
    alone = decoder_with(codec.EventEnvelope.FromString, refuse)  # the one-by-one path
    before = [(sys.getrefcount(r), sys.getrefcount(r.value)) for r in records]
    for decoder in (framed, alone):
        for _ in range(100):
            items, _ = decoder([records])
            del items
    assert [(sys.getrefcount(r), sys.getrefcount(r.value)) for r in records] == before


def test_memory_stays_flat_over_many_polls() -> None:
    records = [Rec(envelope_bytes(batch_id=f"b{n}")) for n in range(200)]
    records.append(Rec(b"\xff"))
    decoder = codec.poll_decoder(None)
    for _ in range(20):
        decoder([records])
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(500):
            decoder([records])
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes kept after 500 polls"
