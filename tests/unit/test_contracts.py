"""Our rules for the contracts: the envelope's payloads, enums that start at UNSPECIFIED, the
contract gate (lint, format, no breaking change) and generated code that matches the protos."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import clients
from generated.huleedu.batch.v1 import batch_pb2
from generated.huleedu.conductor.v1 import conductor_pb2
from generated.huleedu.events.v1 import events_pb2

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
    assert re.search(r"^## \[(.+?)\]", changelog, re.MULTILINE)[1] == version  # type: ignore[index]
