"""``huleedu batch ...`` and ``huleedu conductor ...`` against a fake BatchService in this process:
what each command sends, what it prints for a person and with ``--json``, and its errors.

The fake is a synchronous gRPC server on a free port (the CLI runs its own event loop); it
answers from the fixtures below and records every request.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from clients import cli
from generated.huleedu.batch.v1 import batch_pb2 as pb
from generated.huleedu.batch.v1 import batch_pb2_grpc
from generated.huleedu.conductor.v1 import conductor_pb2 as cpb
from generated.huleedu.conductor.v1 import conductor_pb2_grpc
from generated.huleedu.events.v1 import events_pb2 as ev

STEPS = ("spellcheck", "nlp")
SUCCEEDED, FAILED = ev.STEP_OUTCOME_SUCCEEDED, ev.STEP_OUTCOME_FAILED


def run(status: int, run_id: str = "r-2", *steps: tuple[int, int, int, int]) -> pb.PipelineRun:
    """A run of STEPS, each given as (status, succeeded, failed, total)."""
    return pb.PipelineRun(
        run_id=run_id,
        batch_id="b-1",
        pipeline="nlp",
        status=status,  # type: ignore[arg-type]
        attempt=1,
        steps=[
            pb.RunStep(step=name, status=s, succeeded=ok, failed=bad, total=total)  # type: ignore[arg-type]
            for name, (s, ok, bad, total) in zip(STEPS, steps, strict=True)
        ],
    )


RUNNING = run(pb.RUN_STATUS_RUNNING, "r-2", (pb.RUN_STEP_STATUS_DISPATCHED, 1, 0, 3), (1, 0, 0, 0))
FINISHED = run(
    pb.RUN_STATUS_COMPLETED_WITH_FAILURES,
    "r-2",
    (pb.RUN_STEP_STATUS_SATISFIED, 3, 0, 3),
    (pb.RUN_STEP_STATUS_SATISFIED, 2, 1, 3),
)
BATCH = pb.Batch(
    batch_id="b-1",
    essays=[pb.Essay(essay_id=f"e-{n}") for n in range(3)],
    metadata=pb.BatchMetadata(
        name="Week 3", flags={"prompt_attached": True}, labels={"term": "ht25", "room": "4"}
    ),
)


def not_found(context: grpc.ServicerContext, batch_id: str) -> None:
    detail = status_pb2.Status(code=code_pb2.NOT_FOUND, message=f"batch '{batch_id}' not found")
    for message in (
        error_details_pb2.ErrorInfo(reason="BATCH_NOT_FOUND", domain="batch.huleedu"),
        error_details_pb2.ResourceInfo(resource_type="batch", resource_name=batch_id),
    ):
        detail.details.add().Pack(message)
    context.abort_with_status(rpc_status.to_status(detail))


class FakeBatch(batch_pb2_grpc.BatchServiceServicer):
    def __init__(self) -> None:
        self.requests: dict[str, list[Any]] = defaultdict(list)
        self.watch_cuts = 0  # WatchBatch streams to cut with UNAVAILABLE before answering

    def GetBatchStatus(self, request: Any, context: Any) -> pb.GetBatchStatusResponse:
        self.requests["GetBatchStatus"].append(request)
        if request.batch_id != "b-1":
            not_found(context, request.batch_id)
        older = run(pb.RUN_STATUS_COMPLETED, "r-1", (3, 3, 0, 3), (3, 3, 0, 3))
        return pb.GetBatchStatusResponse(batch=BATCH, runs=[FINISHED, older])

    def ListBatches(self, request: Any, context: Any) -> pb.ListBatchesResponse:
        self.requests["ListBatches"].append(request)
        summary = pb.BatchSummary(
            batch_id="b-1",
            name="Week 3",
            essay_count=3,
            latest_run_status=pb.RUN_STATUS_FAILED,
            labels={"term": "ht25"},
        )
        return pb.ListBatchesResponse(batches=[summary], next_page_token="t-2")

    def CancelRun(self, request: Any, context: Any) -> pb.CancelRunResponse:
        self.requests["CancelRun"].append(request)
        cancelled = run(pb.RUN_STATUS_CANCELLED, request.run_id, (7, 1, 0, 3), (7, 0, 0, 0))
        cancelled.cancel_reason = request.reason
        return pb.CancelRunResponse(run=cancelled)

    def RetryRun(self, request: Any, context: Any) -> pb.RetryRunResponse:
        self.requests["RetryRun"].append(request)
        retried = pb.PipelineRun()
        retried.CopyFrom(RUNNING)
        retried.attempt = 2
        return pb.RetryRunResponse(
            run=retried,
            retried_steps=[pb.RetriedStep(step="nlp", essay_count=1)],
        )

    def UpdateBatch(self, request: Any, context: Any) -> pb.UpdateBatchResponse:
        self.requests["UpdateBatch"].append(request)
        return pb.UpdateBatchResponse(batch=BATCH)

    def ListEssays(self, request: Any, context: Any) -> pb.ListEssaysResponse:
        self.requests["ListEssays"].append(request)
        start = int(request.page_token or 0)
        essays = [
            pb.EssayDetail(
                essay_id=f"e-{n}",
                client_ref=f"essay-{n}",
                steps=[
                    pb.EssayStepResult(step="spellcheck", outcome=SUCCEEDED, attempt=1),
                    pb.EssayStepResult(
                        step="nlp",
                        outcome=FAILED if n == 2 else SUCCEEDED,
                        error=ev.ErrorDetail(code="NLP_FAILED"),
                    ),
                ],
            )
            for n in range(start, min(start + 2, 3))
        ]
        return pb.ListEssaysResponse(essays=essays, next_page_token="2" if start == 0 else "")

    def WatchBatch(self, request: Any, context: Any) -> Iterator[pb.WatchBatchResponse]:
        self.requests["WatchBatch"].append(request)
        yield pb.WatchBatchResponse(run=RUNNING, sequence=1)
        if self.watch_cuts:
            self.watch_cuts -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "the server is draining")
        yield pb.WatchBatchResponse(run=FINISHED, sequence=2, changed_step="nlp")


class FakeConductor(conductor_pb2_grpc.PipelineConductorServiceServicer):
    def __init__(self) -> None:
        self.requests: dict[str, list[Any]] = defaultdict(list)

    def GetBatchPipelineState(
        self, request: Any, context: Any
    ) -> cpb.GetBatchPipelineStateResponse:
        self.requests["GetBatchPipelineState"].append(request)
        return cpb.GetBatchPipelineStateResponse(
            batch_id=request.batch_id,
            essay_count=3,
            steps=[
                cpb.StepState(
                    step="spellcheck", status=cpb.STEP_STATUS_SATISFIED, succeeded=3, total=3
                )
            ],
        )

    def ReopenEssays(self, request: Any, context: Any) -> cpb.ReopenEssaysResponse:
        self.requests["ReopenEssays"].append(request)
        state = cpb.StepState(step="nlp", status=cpb.STEP_STATUS_IN_PROGRESS, succeeded=2, total=3)
        return cpb.ReopenEssaysResponse(
            steps=[cpb.ReopenedStep(step="nlp", essay_ids=["e-2"], state=state)]
        )


@pytest.fixture(scope="module")
def mesh() -> Iterator[tuple[FakeBatch, FakeConductor, list[str]]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    batch = FakeBatch()  # type: ignore[abstract]  # serves the methods under test
    conductor = FakeConductor()  # type: ignore[abstract]
    batch_pb2_grpc.add_BatchServiceServicer_to_server(batch, server)
    conductor_pb2_grpc.add_PipelineConductorServiceServicer_to_server(conductor, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    yield batch, conductor, ["--batch-address", address, "--conductor-address", address]
    server.stop(None)


@pytest.fixture
def huleedu(
    mesh: tuple[FakeBatch, FakeConductor, list[str]], capsys: pytest.CaptureFixture[str]
) -> Any:
    """Run the CLI against the fake: (exit status, stdout, stderr)."""
    batch, conductor, options = mesh
    batch.requests.clear()
    conductor.requests.clear()

    def call(*argv: str) -> tuple[int, str, str]:
        status = cli.main([*options, *argv])
        out, err = capsys.readouterr()
        return status, out, err

    return call


def test_json_before_or_after_the_command_parses_back_into_the_response(huleedu: Any) -> None:
    for argv in (("--json", "batch", "status", "b-1"), ("batch", "status", "b-1", "--json")):
        status, out, _ = huleedu(*argv)
        assert status == 0
        parsed = json_format.Parse(out, pb.GetBatchStatusResponse())
        assert parsed.batch == BATCH
        assert [r.run_id for r in parsed.runs] == ["r-2", "r-1"]


def test_status_reads_as_the_batch_its_runs_and_the_newest_runs_steps(huleedu: Any) -> None:
    status, out, _ = huleedu("batch", "status", "b-1")
    assert status == 0
    assert "Week 3" in out
    assert "prompt_attached" in out
    assert "room=4, term=ht25" in out
    [newest] = [line for line in out.splitlines() if line.startswith("run r-2")]
    assert newest.split() == ["run", "r-2", "nlp", "attempt", "1", "COMPLETED_WITH_FAILURES"]
    [nlp] = [line.split() for line in out.splitlines() if line.split()[:1] == ["nlp"]]
    assert nlp[:5] == ["nlp", "SATISFIED", "2", "1", "0"]  # ok, failed, timed out


def test_cancel_without_a_run_id_cancels_the_newest_run(
    huleedu: Any, mesh: tuple[FakeBatch, FakeConductor, list[str]]
) -> None:
    status, out, _ = huleedu("batch", "cancel", "b-1", "--reason", "wrong prompt")
    assert status == 0
    [sent] = mesh[0].requests["CancelRun"]
    assert (sent.batch_id, sent.run_id, sent.reason) == ("b-1", "r-2", "wrong prompt")
    assert "Cancelled run r-2 of batch b-1." in out
    assert "CANCELLED  (wrong prompt)" in out


def test_retry_sends_its_steps_and_request_id_and_quiet_prints_the_run(
    huleedu: Any, mesh: tuple[FakeBatch, FakeConductor, list[str]]
) -> None:
    argv = ("batch", "retry", "b-1", "r-2", "--step", "nlp", "--request-id", "k-1")
    status, out, _ = huleedu(*argv, "-q")
    assert (status, out) == (0, "r-2\n")
    [sent] = mesh[0].requests["RetryRun"]
    assert (list(sent.steps), sent.request_id) == (["nlp"], "k-1")
    status, out, _ = huleedu(*argv)
    assert "Retrying run r-2 of batch b-1: attempt 2." in out
    assert "nlp: 1 essays" in out


def test_update_masks_only_the_fields_given_and_keeps_the_other_flags_and_labels(
    huleedu: Any, mesh: tuple[FakeBatch, FakeConductor, list[str]]
) -> None:
    status, out, _ = huleedu(
        "batch", "update", "b-1", "--flag", "rush=true", "--label", "room=", "--name", "Week 4"
    )
    assert status == 0
    [sent] = mesh[0].requests["UpdateBatch"]
    assert list(sent.update_mask.paths) == ["flags", "labels", "name"]
    assert dict(sent.metadata.flags) == {"prompt_attached": True, "rush": True}
    assert dict(sent.metadata.labels) == {"term": "ht25"}  # room= removed room
    assert sent.metadata.name == "Week 4"
    assert "Updated batch b-1." in out
    status, _, err = huleedu("batch", "update", "b-1", "--course-code", "ENG5")
    assert list(mesh[0].requests["UpdateBatch"][1].update_mask.paths) == ["course_code"]
    status, _, err = huleedu("batch", "update", "b-1")
    assert status == 1
    assert err == "error: nothing to update: give --flag, --label, --name or --course-code\n"


def test_list_sends_its_filters_and_says_how_to_get_the_next_page(
    huleedu: Any, mesh: tuple[FakeBatch, FakeConductor, list[str]]
) -> None:
    status, out, err = huleedu(
        "batch", "list", "--status", "failed", "--status", "none", "--label", "term=ht25",
        "--created-after", "2025-09-01",
    )  # fmt: skip
    assert status == 0
    [sent] = mesh[0].requests["ListBatches"]
    assert list(sent.latest_run_statuses) == [pb.RUN_STATUS_FAILED, pb.RUN_STATUS_UNSPECIFIED]
    assert dict(sent.labels) == {"term": "ht25"}
    assert sent.created_after.ToJsonString() == "2025-09-01T00:00:00Z"
    assert not sent.HasField("created_before")
    [row] = [line.split() for line in out.splitlines() if line.startswith("b-1")]
    assert row == ["b-1", "Week", "3", "3", "FAILED", "term=ht25"]
    assert err == "more: --page-token t-2 (or --all)\n"


def test_essays_all_reads_every_page_into_one_table(
    huleedu: Any, mesh: tuple[FakeBatch, FakeConductor, list[str]]
) -> None:
    status, out, _ = huleedu("batch", "essays", "b-1", "--all")
    assert status == 0
    assert [r.page_token for r in mesh[0].requests["ListEssays"]] == ["", "2"]
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if "essay-" in line}
    assert rows == {
        "e-0": ["essay-0", "ok", "ok"],
        "e-1": ["essay-1", "ok", "ok"],
        "e-2": ["essay-2", "ok", "failed", "NLP_FAILED"],
    }
    status, out, _ = huleedu("--json", "batch", "essays", "b-1", "--all")
    listed = json_format.Parse(out, pb.ListEssaysResponse())
    assert [e.essay_id for e in listed.essays] == ["e-0", "e-1", "e-2"]


def test_watch_prints_a_line_per_update_when_the_output_is_not_a_terminal(
    huleedu: Any, mesh: tuple[FakeBatch, FakeConductor, list[str]]
) -> None:
    mesh[0].watch_cuts = 1
    status, out, _ = huleedu("batch", "watch", "b-1")
    assert status == 0
    assert "\x1b" not in out
    assert out.splitlines() == [
        "watching run r-2  nlp  attempt 1  RUNNING",
        "#1 RUNNING | spellcheck DISPATCHED 1/3 ok | nlp PENDING",
        "stream interrupted (UNAVAILABLE: the server is draining); reconnecting in "
        + out.split("reconnecting in ")[1].split("\n")[0],
        "#2 COMPLETED_WITH_FAILURES | spellcheck SATISFIED 3/3 ok | nlp SATISFIED 2/3 ok, 1 failed",
        "run r-2 ended COMPLETED_WITH_FAILURES",
    ]
    assert [r.run_id for r in mesh[0].requests["WatchBatch"]] == ["", "r-2"]


def test_watch_json_is_one_update_per_line(huleedu: Any) -> None:
    status, out, _ = huleedu("batch", "watch", "b-1", "--json")
    assert status == 0
    updates = [json_format.Parse(line, pb.WatchBatchResponse()) for line in out.splitlines()]
    assert [u.run for u in updates] == [RUNNING, FINISHED]


def test_a_failed_call_is_one_error_line_and_a_line_per_detail(huleedu: Any) -> None:
    status, out, err = huleedu("batch", "status", "nope")
    assert (status, out) == (1, "")
    lines = err.splitlines()
    assert lines[0] == "error: NOT_FOUND (BATCH_NOT_FOUND): batch 'nope' not found"
    assert lines[1] == "  resource: batch nope"
    status, _, err = huleedu("--json", "batch", "status", "nope")
    shown = __import__("json").loads(err)
    assert (shown["code"], shown["details"][0]["reason"]) == ("NOT_FOUND", "BATCH_NOT_FOUND")


def test_an_rpc_the_server_does_not_serve_is_unimplemented_not_a_traceback(huleedu: Any) -> None:
    status, _, err = huleedu("batch", "spellcheck", "Teh text.")
    assert status == 1
    assert err.startswith("error: UNIMPLEMENTED: ")
    assert "Traceback" not in err


def test_conductor_commands_read_as_tables(
    huleedu: Any, mesh: tuple[FakeBatch, FakeConductor, list[str]]
) -> None:
    status, out, _ = huleedu("conductor", "state", "b-1")
    assert status == 0
    assert out.splitlines()[0] == "batch b-1: 3 essays, flags "
    assert ["spellcheck", "SATISFIED", "3/3", "ok"] in [line.split() for line in out.splitlines()]
    status, out, _ = huleedu("conductor", "reopen", "b-1", "r-2", "--attempt", "2", "--step", "nlp")
    [sent] = mesh[1].requests["ReopenEssays"]
    assert (sent.run_id, sent.attempt, list(sent.steps)) == ("r-2", 2, ["nlp"])
    assert ["nlp", "1", "IN_PROGRESS", "2/3", "ok"] in [line.split() for line in out.splitlines()]
