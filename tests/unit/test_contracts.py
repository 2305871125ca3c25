"""Our rules for the contracts: the envelope's payloads, enums that start at UNSPECIFIED, the
contract gate (lint, format, no breaking change), generated code that matches the protos, and
limits written in the protos' comments that are the limits the code enforces."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import clients
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
        "RunCancelled",
    }


def test_enums_start_with_unspecified_zero() -> None:
    for file in (events_pb2.DESCRIPTOR, conductor_pb2.DESCRIPTOR, batch_pb2.DESCRIPTOR):
        for enum in file.enum_types_by_name.values():
            zero = enum.values_by_number[0].name
            assert zero.endswith("_UNSPECIFIED"), f"{enum.full_name}: {zero}"


def test_the_contract_gate_passes() -> None:
    # buf lint, buf format, and buf breaking against the last released contract (the gate of
    # `make check`, here so that CI's `make test` runs it too)
    result = subprocess.run(
        [str(ROOT / "scripts" / "check_contracts.sh")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_generated_code_of_every_language_is_up_to_date() -> None:
    command = [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_sdks_and_the_contract_share_one_version() -> None:
    newest = max(
        (ROOT / "protos" / "released").glob("v*.binpb"),
        key=lambda p: tuple(int(n) for n in p.stem.removeprefix("v").split(".")),
    )
    version = newest.stem.removeprefix("v")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    go_sdk = (ROOT / "clients" / "go" / "huleedu" / "doc.go").read_text()
    ts_sdk = json.loads((ROOT / "clients" / "ts" / "package.json").read_text())
    ts_index = (ROOT / "clients" / "ts" / "src" / "index.ts").read_text()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert pyproject["project"]["version"] == version
    assert clients.__version__ == version
    assert f'const Version = "{version}"' in go_sdk
    assert ts_sdk["version"] == version
    assert f'export const VERSION = "{version}";' in ts_index
    released = [
        v for v in re.findall(r"^## \[(.+?)\]", changelog, re.MULTILINE) if v != "Unreleased"
    ]
    assert released[0] == version


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
