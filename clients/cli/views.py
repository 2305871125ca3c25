"""How the BatchService's messages read in a terminal: batches, runs with their steps, essays."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from clients.cli.output import (
    arrows,
    counts,
    mapping,
    pairs,
    run_status,
    run_step_status,
    table,
    when,
)
from clients.enums import RunStatus, SkipReason, StepOutcome
from generated.huleedu.batch.v1 import batch_pb2 as pb
from generated.huleedu.conductor.v1 import conductor_pb2 as cpb


def batch_created(batch: pb.Batch) -> RenderableType:
    essays = len(batch.essays)
    return Group(
        Text(f"Created batch {batch.batch_id} with {essays} essay{'s' * (essays != 1)}."),
        batch_fields(batch),
    )


def batch_fields(batch: pb.Batch) -> Table:
    meta = batch.metadata
    return pairs(
        [
            ("batch", batch.batch_id),
            ("name", meta.name),
            ("course", meta.course_code),
            ("language", meta.language),
            ("flags", mapping(meta.flags)),
            ("labels", mapping(meta.labels)),
            ("essays", str(len(batch.essays))),
            ("created", when(batch.created_at, batch.HasField("created_at"))),
        ]
    )


def run_started(started: pb.StartPipelineResponse) -> RenderableType:
    run = started.run
    lines = [Text(f"Started run {run.run_id}: {run.pipeline} on batch {run.batch_id}.")]
    if started.steps:
        lines.append(Text(f"  steps   {arrows(started.steps)}"))
    for step, reason in zip(started.pruned_steps, started.pruned_reasons, strict=False):
        lines.append(Text(f"  pruned  {step} ({SkipReason(reason)})"))
    return Group(*lines)


def run_header(run: pb.PipelineRun) -> Text:
    """``run ID  pipeline  attempt N  STATUS``, with the cancel reason when there is one."""
    text = Text(f"run {run.run_id}  {run.pipeline}  attempt {max(run.attempt, 1)}  ")
    text.append_text(run_status(run.status))
    if run.cancel_reason:
        text.append(f"  ({run.cancel_reason})")
    return text


def steps_table(run: pb.PipelineRun) -> Table:
    grid = table("step", "status", ">ok", ">failed", ">timed out", ">total", ">attempt")
    for step in run.steps:
        grid.add_row(
            step.step,
            run_step_status(step.status),
            str(step.succeeded),
            str(step.failed),
            str(step.timed_out),
            str(step.total),
            str(step.attempt or ""),  # 0: never dispatched
        )
    return grid


def run_detail(run: pb.PipelineRun) -> RenderableType:
    return Group(run_header(run), steps_table(run))


def batch_status(status: pb.GetBatchStatusResponse) -> RenderableType:
    parts: list[RenderableType] = [batch_fields(status.batch)]
    if not status.runs:
        parts.append(Text("No runs yet."))
        return Group(*parts)
    runs = table("run", "pipeline", "status", ">attempt", "created", "finished", title="runs")
    for run in status.runs:
        finished = when(run.finished_at, run.HasField("finished_at"))
        runs.add_row(
            run.run_id,
            run.pipeline,
            run_status(run.status),
            str(max(run.attempt, 1)),
            when(run.created_at),
            finished,
        )
    parts += [runs, Text("newest run:", style="bold"), run_detail(status.runs[0])]
    return Group(*parts)


def batch_list(page: pb.ListBatchesResponse) -> RenderableType:
    return batch_table(page.batches)


def batch_table(batches: Sequence[pb.BatchSummary]) -> RenderableType:
    if not batches:
        return Text("No batches.")
    grid = table("batch", "name", ">essays", "created", "latest run", "labels")
    for summary in batches:
        latest = summary.latest_run_status
        grid.add_row(
            summary.batch_id,
            summary.name,
            str(summary.essay_count),
            when(summary.created_at),
            run_status(latest) if latest else Text("no run", style="dim"),
            mapping(summary.labels),
        )
    return grid


def run_cancelled(run: pb.PipelineRun) -> RenderableType:
    return Group(Text(f"Cancelled run {run.run_id} of batch {run.batch_id}."), run_detail(run))


def run_retried(retried: pb.RetryRunResponse) -> RenderableType:
    run = retried.run
    lines: list[RenderableType] = [
        Text(f"Retrying run {run.run_id} of batch {run.batch_id}: attempt {run.attempt}.")
    ]
    for step in retried.retried_steps:
        what = f"{step.essay_count} essays" if step.essay_count else "waits for a retried step"
        lines.append(Text(f"  {step.step}: {what}"))
    lines.append(run_detail(run))
    return Group(*lines)


def batch_updated(batch: pb.Batch) -> RenderableType:
    return Group(Text(f"Updated batch {batch.batch_id}."), batch_fields(batch))


def spellcheck_queued(response: pb.TriggerSpellcheckResponse) -> RenderableType:
    return Text(
        f"Queued essay {response.essay_id} for spellcheck (text {response.text_storage_id}, "
        f"correlation id {response.correlation_id})."
    )


def outcome(result: pb.EssayStepResult | cpb.EssayStepResult) -> Text:
    """One essay's result of one step: ok, failed (with its code), or open (waiting)."""
    if StepOutcome(result.outcome) is StepOutcome.SUCCEEDED:
        return Text("ok", style="green")
    if StepOutcome(result.outcome) is StepOutcome.FAILED:
        code = f" {result.error.code}" if result.error.code else ""
        return Text(f"failed{code}", style="red")
    return Text("open", style="dim")


def essay_detail(essay: pb.EssayDetail) -> RenderableType:
    parts: list[RenderableType] = [
        pairs(
            [
                ("essay", essay.essay_id),
                ("batch", essay.batch_id),
                ("reference", essay.client_ref),
                ("original", essay.original_storage_id),
                ("latest", essay.current_storage_id),
            ]
        )
    ]
    if essay.steps:
        steps = table("step", "outcome", ">attempt", "run", "output", "error")
        for result in essay.steps:
            steps.add_row(
                result.step,
                outcome(result),
                str(result.attempt),
                result.run_id,
                result.output_storage_id,
                result.error.message,
            )
        parts.append(steps)
    if essay.original_text:
        parts += [Text("original text", style="bold"), Text(essay.original_text)]
    if essay.current_text and essay.current_text != essay.original_text:
        parts += [Text("latest text", style="bold"), Text(essay.current_text)]
    return Group(*parts)


def essays_table(essays: Sequence[pb.EssayDetail]) -> RenderableType:
    if not essays:
        return Text("No essays.")
    steps = list(dict.fromkeys(r.step for essay in essays for r in essay.steps))
    grid = table("essay", "reference", *steps)
    for essay in essays:
        results = {r.step: outcome(r) for r in essay.steps}
        grid.add_row(essay.essay_id, essay.client_ref, *(results.get(s, Text("")) for s in steps))
    return grid


def essays_page(page: pb.ListEssaysResponse) -> RenderableType:
    return essays_table(page.essays)


def watch_line(update: pb.WatchBatchResponse) -> str:
    """One update as one plain line (output that is not a terminal): ``#3 RUNNING | spellcheck
    SATISFIED 3/3 ok | nlp DISPATCHED 1/3 ok, 1 failed``."""
    run = update.run
    steps = [
        " ".join(
            part
            for part in (
                step.step,
                run_step_status(step.status).plain,
                counts(step.succeeded, step.failed, step.total, step.timed_out),
            )
            if part
        )
        for step in run.steps
    ]
    return " | ".join([f"#{update.sequence} {RunStatus(run.status)}", *steps])
