"""Our rules for the contracts: the envelope's payloads, and enums that start at UNSPECIFIED."""

from __future__ import annotations

from generated.huleedu.batch.v1 import batch_pb2
from generated.huleedu.conductor.v1 import conductor_pb2
from generated.huleedu.events.v1 import events_pb2


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


def test_enums_start_with_unspecified_zero() -> None:
    for file in (events_pb2.DESCRIPTOR, conductor_pb2.DESCRIPTOR, batch_pb2.DESCRIPTOR):
        for enum in file.enum_types_by_name.values():
            zero = enum.values_by_number[0].name
            assert zero.endswith("_UNSPECIFIED"), f"{enum.full_name}: {zero}"
