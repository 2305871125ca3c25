"""How ``huleedu`` reads: the live progress at a fixed width, error lines, ``--help``, and the
failures a person meets first (no server, no Kafka, Ctrl-C) as the process itself reports them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from rich.console import Console

from clients import cli
from clients.batch import BatchClient
from clients.cli.errors import rpc_lines
from clients.cli.output import Output
from clients.cli.watch import bar, progress, watch
from clients.errors import RpcError
from generated.huleedu.batch.v1 import batch_pb2 as pb
from generated.huleedu.batch.v1 import batch_pb2_grpc
from tests.support.net import serving
from tests.support.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
HULEEDU = [sys.executable, "-m", "clients"]

RUN = pb.PipelineRun(
    run_id="r-1",
    batch_id="b-1",
    pipeline="nlp",
    status=pb.RUN_STATUS_RUNNING,
    attempt=2,
    steps=[
        pb.RunStep(step="spellcheck", status=pb.RUN_STEP_STATUS_SATISFIED, succeeded=4, total=4),
        pb.RunStep(
            step="nlp", status=pb.RUN_STEP_STATUS_DISPATCHED, succeeded=2, failed=1, total=4
        ),
        pb.RunStep(step="ai_feedback", status=pb.RUN_STEP_STATUS_PENDING),
    ],
)


def rendered(renderable: Any, width: int = 100, terminal: bool = False) -> str:
    console = Console(record=True, width=width, force_terminal=terminal, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_a_bar_is_succeeded_then_failed_then_the_rest_of_the_total() -> None:
    text = bar(2, 1, 4, width=20)
    assert text.plain == "━" * 20
    assert [(s.start, s.end, str(s.style)) for s in text.spans] == [
        (0, 10, "green"),
        (10, 15, "red"),
        (15, 20, "bright_black"),
    ]
    assert [str(s.style) for s in bar(0, 0, 0, width=5).spans] == ["bright_black"]


def test_the_progress_view_has_a_status_line_and_a_bar_per_step() -> None:
    lines = rendered(progress(RUN, elapsed=3.25)).splitlines()
    assert lines[0] == "run r-1  nlp  attempt 2  RUNNING  3.2s"
    full, partial, empty = "━" * 30, "━" * 30, "━" * 30
    assert lines[1].split() == ["spellcheck", full, "4/4", "ok", "SATISFIED"]
    assert lines[2].split() == ["nlp", partial, "2/4", "ok,", "1", "failed", "DISPATCHED"]
    assert lines[3].split() == ["ai_feedback", empty, "PENDING"]


def test_an_rpc_error_is_one_line_and_one_indented_line_per_detail() -> None:
    violations = error_details_pb2.BadRequest(
        field_violations=[
            {"field": "essays", "description": "must contain at least one essay"},
            {"field": "metadata.name", "description": "at most 256 bytes"},
        ]
    )
    precondition = error_details_pb2.PreconditionFailure(
        violations=[{"type": "FLAG", "subject": "prompt_attached", "description": "not set"}]
    )
    retry = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000)
    )
    info = error_details_pb2.ErrorInfo(reason="PREREQUISITES_NOT_MET", domain="batch.huleedu")
    exc = RpcError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "nlp cannot run",
        [info, violations, precondition, retry],
        "cid-1",
    )
    assert rpc_lines(exc) == [
        "error: FAILED_PRECONDITION (PREREQUISITES_NOT_MET): nlp cannot run",
        "  essays: must contain at least one essay",
        "  metadata.name: at most 256 bytes",
        "  FLAG prompt_attached: not set",
        "  retry in 1.5s",
        "  correlation id cid-1",
    ]


def test_help_lists_the_environment_and_the_pipelines_without_a_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["--help"], ["batch", "--help"], ["batch", "start", "--help"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(["--batch-address", "127.0.0.1:1", *argv])
        assert exited.value.code == 0
        shown = capsys.readouterr().out
        for variable in ("BATCH_ADDRESS", "HULEEDU_API_KEY", "HULEEDU_API_KEY_FILE", "HULEEDU_TLS"):
            assert f"  {variable} " in shown, (argv, variable)
        for pipeline in ("spellcheck", "nlp", "cj_assessment", "ai_feedback", "comprehensive"):
            assert f"\n  {pipeline} " in shown, (argv, pipeline)
        assert "flags steps require: prompt_attached" in shown
    with pytest.raises(SystemExit):
        cli.main(["dlq", "--help"])
    assert "  KAFKA_BOOTSTRAP_SERVERS " in capsys.readouterr().out


def test_help_says_how_to_list_the_pipelines_when_the_definitions_cannot_be_read(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pipelines.default_definitions", lambda: Path("/nonexistent.yaml"))
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "pipelines: list a conductor's with `huleedu conductor pipelines`" in (
        capsys.readouterr().out
    )


def _huleedu(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HULEEDU, *argv],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_no_server_is_one_line_naming_the_address_and_the_setting() -> None:
    result = _huleedu("--batch-address", "127.0.0.1:1", "batch", "status", "b-1")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: cannot reach the BatchService at 127.0.0.1:1 (Connection refused); "
        "set --batch-address or BATCH_ADDRESS\n"
    )
    result = _huleedu("conductor", "pipelines", CONDUCTOR_ADDRESS="127.0.0.1:1")
    assert result.stderr.startswith("error: cannot reach the PipelineConductor at 127.0.0.1:1 (")
    assert result.stderr.endswith("; set --conductor-address or CONDUCTOR_ADDRESS\n")


def test_no_kafka_is_one_line_naming_the_brokers_and_the_setting() -> None:
    result = _huleedu("dlq", "list", "huleedu.essay.step.outcome.v1", "--kafka", "127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr == (
        "error: cannot reach Kafka at 127.0.0.1:1 (no broker answered); "
        "set --kafka or KAFKA_BOOTSTRAP_SERVERS\n"
    )


def test_an_unreadable_key_file_is_an_error_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    result = _huleedu("--api-key-file", str(missing), "batch", "status", "b-1")
    assert result.returncode == 1
    assert result.stderr.startswith("error: [Errno 2] No such file or directory: ")
    assert "Traceback" not in result.stderr


class Watched(batch_pb2_grpc.BatchServiceServicer):
    """One update of RUN; then, unless ``hangs``, the run ends COMPLETED."""

    def __init__(self, hangs: bool) -> None:
        self.hangs = hangs

    async def WatchBatch(self, request: Any, context: Any) -> AsyncIterator[pb.WatchBatchResponse]:
        yield pb.WatchBatchResponse(run=RUN, sequence=1)
        if self.hangs:
            await asyncio.Event().wait()
        ended = pb.PipelineRun()
        ended.CopyFrom(RUN)
        ended.status = pb.RUN_STATUS_COMPLETED
        ended.steps[1].status = pb.RUN_STEP_STATUS_SATISFIED
        yield pb.WatchBatchResponse(run=ended, sequence=2)


@pytest.fixture
async def hanging() -> AsyncIterator[str]:
    watched = Watched(hangs=True)  # type: ignore[abstract]  # serves WatchBatch
    async with serving(
        lambda s: batch_pb2_grpc.add_BatchServiceServicer_to_server(watched, s)
    ) as target:
        yield target


@pytest.fixture
async def ending() -> AsyncIterator[str]:
    watched = Watched(hangs=False)  # type: ignore[abstract]  # serves WatchBatch
    async with serving(
        lambda s: batch_pb2_grpc.add_BatchServiceServicer_to_server(watched, s)
    ) as target:
        yield target


async def test_ctrl_c_during_a_watch_exits_130_quietly(hanging: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with out.open("w") as stdout:
        process = await asyncio.create_subprocess_exec(
            *HULEEDU, "--batch-address", hanging, "batch", "watch", "b-1",
            cwd=ROOT, stdout=stdout, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    try:
        await eventually(lambda: "#1 RUNNING" in out.read_text(), 30, what="the first update")
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 130
    assert err.decode() == ""


async def test_the_live_view_on_a_terminal_ends_with_the_final_bars(ending: str) -> None:
    console = Console(record=True, width=100, force_terminal=True, color_system=None)
    async with BatchClient(ending) as client:
        await watch(client, "b-1", "", Output(False, console))
    text = console.export_text()
    assert "#1" not in text  # the live view, not the plain lines
    final = text.split("\x1b")[-1] if "\x1b" in text else text
    assert "run r-1  nlp  attempt 2  COMPLETED" in final
    [nlp] = [line.split() for line in final.splitlines() if line.startswith("nlp")]
    assert nlp == ["nlp", "━" * 30, "2/4", "ok,", "1", "failed", "SATISFIED"]
    assert final.rstrip().endswith("run r-1 ended COMPLETED")
