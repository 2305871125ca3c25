"""``huleedu`` against both servers as processes on real backends, with the demo workers (0.3 s a
command): cancel a run, retry it to the end, update a batch, read its essays and their outcomes,
list batches by label; each command's ``--json`` read back into its response message.

Needs the run control of issue #19 on the servers (CancelRun, RetryRun, UpdateBatch, GetEssay,
ListEssays, ListBatches filters, GetEssayOutcomes).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from generated.huleedu.batch.v1 import batch_pb2 as pb
from generated.huleedu.conductor.v1 import conductor_pb2 as cpb
from tests.e2e.conftest import ROOT

Parsed = TypeVar("Parsed", bound=Message)


class Huleedu:
    """The CLI as a process, pointed at the mesh."""

    def __init__(self, mesh: dict[str, str]) -> None:
        self.env = {
            **os.environ,
            "BATCH_ADDRESS": mesh["HULEEDU_BATCH_ADDRESS"],
            "CONDUCTOR_ADDRESS": mesh["HULEEDU_CONDUCTOR_ADDRESS"],
        }

    async def __call__(self, *argv: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clients", *argv,
            cwd=ROOT, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 180)
        assert process.returncode == 0, f"huleedu {' '.join(argv)}: {err.decode()}"
        return out.decode()

    async def parsed(self, kind: type[Parsed], *argv: str) -> Parsed:
        return json_format.Parse(await self("--json", *argv), kind())


async def test_a_run_is_cancelled_and_retried_to_the_end(sdk_mesh: dict[str, str]) -> None:
    huleedu = Huleedu(sdk_mesh)
    batch_id = (
        await huleedu(
            "batch", "create", "-q", "--flag", "prompt_attached", "--label", "suite=cli-e2e",
            "Teh first essay.", "A second essay.",
        )
    ).strip()  # fmt: skip
    run_id = (await huleedu("batch", "start", "-q", batch_id, "comprehensive")).strip()
    cancelled = await huleedu.parsed(
        pb.PipelineRun, "batch", "cancel", batch_id, run_id, "--reason", "wrong prompt"
    )
    assert (cancelled.status, cancelled.cancel_reason) == (pb.RUN_STATUS_CANCELLED, "wrong prompt")
    status = await huleedu.parsed(pb.GetBatchStatusResponse, "batch", "status", batch_id)
    assert status.runs[0].status == pb.RUN_STATUS_CANCELLED

    retried = await huleedu.parsed(pb.RetryRunResponse, "batch", "retry", batch_id)
    assert (retried.run.run_id, retried.run.attempt) == (run_id, 2)
    lines = (await huleedu("--json", "batch", "watch", batch_id)).splitlines()
    last = json_format.Parse(lines[-1], pb.WatchBatchResponse()).run
    assert (last.status, last.attempt) == (pb.RUN_STATUS_COMPLETED, 2)

    human = await huleedu("batch", "watch", batch_id)  # a finished run: its state, then the end
    assert human.splitlines()[-1] == f"run {run_id} ended COMPLETED"


async def test_a_batch_is_updated_listed_and_its_essays_read(sdk_mesh: dict[str, str]) -> None:
    huleedu = Huleedu(sdk_mesh)
    created = await huleedu.parsed(
        pb.Batch, "batch", "create", "--flag", "prompt_attached", "Teh first essay.", "Second."
    )
    batch_id = created.batch_id
    updated = await huleedu.parsed(
        pb.Batch, "batch", "update", batch_id, "--label", "term=ht25", "--name", "Week 3"
    )
    assert dict(updated.metadata.labels) == {"term": "ht25"}
    assert updated.metadata.name == "Week 3"
    assert dict(updated.metadata.flags) == {"prompt_attached": True}  # kept
    listed = await huleedu.parsed(
        pb.ListBatchesResponse, "batch", "list", "--all", "--label", "term=ht25", "--status", "none"
    )
    assert batch_id in [b.batch_id for b in listed.batches]

    run_id = (await huleedu("batch", "start", "-q", batch_id, "spellcheck")).strip()
    await huleedu("batch", "watch", batch_id, "--run-id", run_id)
    essays = await huleedu.parsed(pb.ListEssaysResponse, "batch", "essays", batch_id, "--all")
    assert [e.client_ref for e in essays.essays] == ["essay-0", "essay-1"]
    assert [[s.step for s in e.steps] for e in essays.essays] == [["spellcheck"], ["spellcheck"]]
    first = essays.essays[0].essay_id
    essay = await huleedu.parsed(pb.EssayDetail, "batch", "essay", first, "--text")
    assert essay.original_text == "Teh first essay."
    assert essay.current_text != ""
    shown = await huleedu("batch", "essay", first, "--batch", batch_id, "--text")
    assert "original text" in shown

    outcomes = await huleedu.parsed(
        cpb.GetEssayOutcomesResponse, "conductor", "outcomes", batch_id, first
    )
    [result] = outcomes.essays[0].steps
    assert (result.step, result.run_id, result.attempt) == ("spellcheck", run_id, 1)
