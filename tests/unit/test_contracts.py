"""Our rules for the contracts: the envelope's payloads, enums that start at UNSPECIFIED, and
limits written in the protos' comments that are the limits the code enforces."""

from __future__ import annotations

from pathlib import Path

from batch_server.api import convert as batch_convert
from batch_server.domain.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from conductor_server.api import convert as conductor_convert
from conductor_server.records import MAX_STORAGE_ID
from generated.huleedu.batch.v1 import batch_pb2
from generated.huleedu.conductor.v1 import conductor_pb2
from generated.huleedu.events.v1 import events_pb2
from mesh.security.keys import SCOPES
from mesh.security.limits import parse_rates
from mesh.settings import DEFAULT_RATE_LIMITS, SecuritySettings, ServerSettings
from mesh.validation import MAX_ID_LENGTH, MAX_NAME_LENGTH

ROOT = Path(__file__).resolve().parents[2]


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


def test_the_limits_written_in_the_protos_are_the_ones_enforced() -> None:
    batch = (ROOT / "protos/huleedu/batch/v1/batch.proto").read_text()
    conductor = (ROOT / "protos/huleedu/conductor/v1/conductor.proto").read_text()
    rates = parse_rates(DEFAULT_RATE_LIMITS, SCOPES)
    server, security = ServerSettings(), SecuritySettings()
    for proto in (batch, conductor):
        assert f"{server.max_message_bytes // 2**20} MiB by default" in proto
        assert f"ids ({'batch_id' if proto is conductor else 'batch_id, run_id'}" in proto
        assert f"1-{MAX_ID_LENGTH} characters" in proto
        assert f"1-{MAX_NAME_LENGTH} such characters" in proto
    assert f"1 to {batch_convert.MAX_ESSAYS:,}" in batch
    assert f"at most {batch_convert.MAX_TEXT_BYTES // 2**20} MiB of UTF-8" in batch
    assert f"at most {batch_convert.MAX_LABEL_BYTES}\n  // bytes" in batch
    assert f"Maximum batches to return, 1-{MAX_PAGE_SIZE}; {DEFAULT_PAGE_SIZE} when 0" in batch
    assert f"MAX_STREAMS_PER_PRINCIPAL ({security.max_streams_per_principal})" in batch
    assert f"1 to {conductor_convert.MAX_ESSAYS_PER_BATCH:,} unique ids" in conductor
    assert f"up to {MAX_STORAGE_ID:,} such characters" in conductor
    for scope, rate in rates.items():
        assert rate is not None
        written = f"{scope} {rate.per_second:,.0f}/s with\n// bursts of {rate.burst:,.0f}"
        written_inline = f"{scope} {rate.per_second:,.0f}/s with bursts of {rate.burst:,.0f}"
        if scope.startswith("batches:") and scope != "batches:register":
            assert written in batch or written_inline in batch, scope
        elif scope != "deadletters:admin":
            assert written in conductor or written_inline in conductor, scope
