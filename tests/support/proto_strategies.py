"""Hypothesis strategies for any protobuf message, built from its descriptor.

Used to fuzz RPCs with random, empty, huge and non-ASCII values. Well-known types get values
valid for their JSON mapping.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

_MAX_DEPTH = 3
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=40)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=40)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if kind == FieldDescriptor.TYPE_FLOAT:
            return st.floats(allow_nan=False, width=32)
        return st.floats(allow_nan=False)
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return st.sampled_from([v.number for v in field.enum_type.values])
    low, high = _INT_RANGES[kind]
    return st.integers(low, high)


def _timestamp() -> st.SearchStrategy[timestamp_pb2.Timestamp]:
    return st.builds(
        timestamp_pb2.Timestamp,
        seconds=st.integers(-62135596800, 253402300799),
        nanos=st.integers(0, 999_999_999),
    )


def _duration() -> st.SearchStrategy[duration_pb2.Duration]:
    seconds = st.integers(-315_576_000_000, 315_576_000_000)
    return seconds.flatmap(
        lambda s: st.builds(
            duration_pb2.Duration,
            seconds=st.just(s),
            nanos=st.integers(0, 999_999_999) if s > 0 else st.integers(-999_999_999, 0),
        )
    )


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return _scalar(field)
    assert field.message_type is not None
    return messages(field.message_type, depth + 1)


def _assign(message: Message, field: FieldDescriptor, value: Any) -> None:
    target = getattr(message, field.name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        for k, v in value.items():
            if isinstance(v, Message):
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif field.is_repeated and field.type == FieldDescriptor.TYPE_MESSAGE:
        for item in value:
            target.add().CopyFrom(item)
    elif field.is_repeated:
        target.extend(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _fill(descriptor: Descriptor, depth: int, chosen: dict[str, Any]) -> st.SearchStrategy[Message]:
    cls = GetMessageClass(descriptor)
    oneof_fields = {f.name for o in descriptor.oneofs for f in o.fields}
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.name in oneof_fields:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            parts[field.name] = st.dictionaries(
                _scalar(key_field), _value(value_field, depth), max_size=3
            )
        elif field.is_repeated:
            if depth >= _MAX_DEPTH and field.type == FieldDescriptor.TYPE_MESSAGE:
                continue
            parts[field.name] = st.lists(_value(field, depth), max_size=3)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and depth >= _MAX_DEPTH:
            continue
        else:
            parts[field.name] = _value(field, depth) | st.none()

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for name, value in {**values, **chosen}.items():
            if value is not None:
                _assign(message, descriptor.fields_by_name[name], value)
        return message

    return st.fixed_dictionaries(parts).map(build)


def _single(name: str) -> Any:
    return lambda value: {name: value}


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Random, fully typed instances of the message ``descriptor`` describes."""
    if descriptor.full_name == "google.protobuf.Timestamp":
        return _timestamp()
    if descriptor.full_name == "google.protobuf.Duration":
        return _duration()
    if not descriptor.oneofs:
        return _fill(descriptor, depth, {})
    # Pick at most one member of each oneof (the first oneof suffices for our contracts).
    choices: list[st.SearchStrategy[dict[str, Any]]] = [st.just({})]
    for field in descriptor.oneofs[0].fields:
        choices.append(_value(field, depth).map(_single(field.name)))
    return st.one_of(choices).flatmap(lambda chosen: _fill(descriptor, depth, chosen))
