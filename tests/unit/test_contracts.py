"""Every contract message survives the wire: bytes and protobuf JSON round trips."""

from __future__ import annotations

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generated.huleedu.batch.v1 import batch_pb2
from generated.huleedu.conductor.v1 import conductor_pb2
from generated.huleedu.events.v1 import events_pb2
from tests.support.proto_strategies import messages


def _all_messages(file: FileDescriptor) -> list[Descriptor]:
    found: list[Descriptor] = []
    stack = list(file.message_types_by_name.values())
    while stack:
        descriptor = stack.pop()
        if not descriptor.GetOptions().map_entry:
            found.append(descriptor)
        stack.extend(descriptor.nested_types)
    return sorted(found, key=lambda d: d.full_name)


EVENT_MESSAGES = _all_messages(events_pb2.DESCRIPTOR)
RPC_MESSAGES = _all_messages(conductor_pb2.DESCRIPTOR) + _all_messages(batch_pb2.DESCRIPTOR)
ROUND_TRIP = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)


def test_the_event_contract_has_every_payload_the_design_requires() -> None:
    payloads = {
        f.message_type.name
        for f in events_pb2.EventEnvelope.DESCRIPTOR.oneofs[0].fields
        if f.message_type is not None
    }
    assert payloads == {
        "EssaySpellcheckRequested",
        "BatchCreated",
        "StepCommand",
        "EssayStepOutcome",
        "BatchStepCompleted",
        "PhaseSkipped",
        "PipelineRunCompleted",
        "DeadLetter",
    }


@pytest.mark.parametrize("descriptor", EVENT_MESSAGES + RPC_MESSAGES, ids=lambda d: d.full_name)
@given(data=st.data())
@ROUND_TRIP
def test_message_round_trips_through_bytes_and_json(
    descriptor: Descriptor, data: st.DataObject
) -> None:
    original: Message = data.draw(messages(descriptor))
    cls = GetMessageClass(descriptor)

    from_bytes = cls.FromString(original.SerializeToString())
    assert from_bytes == original

    from_json = json_format.Parse(json_format.MessageToJson(original), cls())
    assert from_json == original


@given(envelope=messages(events_pb2.EventEnvelope.DESCRIPTOR))
@ROUND_TRIP
def test_envelope_payload_type_is_recoverable_from_bytes_alone(
    envelope: events_pb2.EventEnvelope,
) -> None:
    decoded = events_pb2.EventEnvelope.FromString(envelope.SerializeToString())
    assert decoded.WhichOneof("payload") == envelope.WhichOneof("payload")


def test_enums_start_with_unspecified_zero() -> None:
    for file in (events_pb2.DESCRIPTOR, conductor_pb2.DESCRIPTOR, batch_pb2.DESCRIPTOR):
        for enum in file.enum_types_by_name.values():
            zero = enum.values_by_number[0].name
            assert zero.endswith("_UNSPECIFIED"), f"{enum.full_name}: {zero}"
