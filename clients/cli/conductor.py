"""``huleedu conductor ...``: the PipelineConductor's RPCs (definitions, state, outcomes)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from clients.cli.errors import reaching
from clients.cli.options import add_command, credentials
from clients.cli.output import Output, arrows, counts, mapping, step_status, table
from clients.cli.views import outcome
from clients.conductor import ConductorClient
from clients.enums import OutcomeVerdict, SkipReason
from generated.huleedu.conductor.v1 import conductor_pb2 as pb
from generated.huleedu.events.v1 import events_pb2

Subparsers = Any  # argparse's _SubParsersAction is private


async def serve(args: argparse.Namespace, out: Output) -> None:
    """Open a ConductorClient and run the chosen command with it."""
    target = args.conductor_address
    async with ConductorClient(target, args.timeout, credentials(args)) as client:
        with reaching("the PipelineConductor", target, "--conductor-address or CONDUCTOR_ADDRESS"):
            await args.run(client, args, out)


def pipelines_table(listed: pb.ListPipelinesResponse) -> RenderableType:
    grid = table("pipeline", "steps", "description")
    for pipeline in listed.pipelines:
        grid.add_row(pipeline.name, arrows([s.name for s in pipeline.steps]), pipeline.description)
    if not listed.flags:
        return grid
    return Group(grid, Text(f"flags steps require: {', '.join(listed.flags)}"))


def pipeline_detail(pipeline: pb.Pipeline) -> RenderableType:
    grid = table("step", "after", "requires", ">min ok", "timeout", "command", "service")
    for step in pipeline.steps:
        timeout = step.timeout.ToTimedelta() if step.HasField("timeout") else None
        grid.add_row(
            step.name,
            ", ".join(step.depends_on),
            ", ".join(step.requires),
            f"{step.min_success_ratio:g}",
            f"{timeout.total_seconds():g}s" if timeout else "",
            step.command,
            step.service,
        )
    title = f"{pipeline.name}: {pipeline.description} (version {pipeline.version[:12]})"
    return Group(Text(title), grid)


def state_table(state: pb.GetBatchPipelineStateResponse) -> RenderableType:
    head = f"batch {state.batch_id}: {state.essay_count} essays, flags {mapping(state.flags)}"
    return Group(Text(head), steps_table(state.steps))


def steps_table(steps: Any) -> RenderableType:
    grid = table("step", "status", "progress")
    for s in steps:
        grid.add_row(
            s.step, step_status(s.status), counts(s.succeeded, s.failed, s.total, s.timed_out)
        )
    return grid


def resolution(resolved: pb.ResolvePipelineResponse) -> RenderableType:
    lines = [Text(f"{resolved.target} for batch {resolved.batch_id} (dry run):")]
    run = [s.name for s in resolved.steps]
    lines.append(Text(f"  would run  {arrows(run)}" if run else "  nothing to run"))
    for pruned in resolved.pruned_steps:
        lines.append(Text(f"  pruned     {pruned.step} ({SkipReason(pruned.reason)})"))
    return Group(*lines)


def registered(response: pb.RegisterBatchResponse) -> RenderableType:
    how = "registered" if response.created else "already registered (flags replaced)"
    return Text(f"Batch {response.batch_id}: {response.essay_count} essays, {how}.")


def validated(response: pb.ValidatePrerequisitesResponse) -> RenderableType:
    return Text(f"{response.step} may run now for batch {response.batch_id}.")


def recorded(response: pb.RecordStepOutcomeResponse) -> RenderableType:
    verdict = OutcomeVerdict(response.verdict)
    done = "; the step is complete" if response.completed_step else ""
    return Group(Text(f"Outcome {verdict}{done}."), steps_table([response.state]))


def reopened(response: pb.ReopenEssaysResponse) -> RenderableType:
    grid = table("step", ">reopened", "status", "progress")
    for step in response.steps:
        s = step.state
        progress = counts(s.succeeded, s.failed, s.total, s.timed_out)
        grid.add_row(step.step, str(len(step.essay_ids)), step_status(s.status), progress)
    return grid


def expired(response: pb.ExpireStepResponse) -> RenderableType:
    n = len(response.timed_out_essay_ids)
    return Group(Text(f"{n} essays timed out."), steps_table([response.state]))


def outcomes_table(response: pb.GetEssayOutcomesResponse) -> RenderableType:
    steps = list(dict.fromkeys(r.step for e in response.essays for r in e.steps))
    grid = table("essay", *steps)
    for essay in response.essays:
        results = {r.step: outcome(r) for r in essay.steps}
        grid.add_row(essay.essay_id, *(results.get(s, Text("")) for s in steps))
    return grid


async def pipelines(client: ConductorClient, args: argparse.Namespace, out: Output) -> None:
    out.show(await client.list_pipelines(), pipelines_table)


async def pipeline(client: ConductorClient, args: argparse.Namespace, out: Output) -> None:
    out.show(await client.get_pipeline(args.name), pipeline_detail)


async def register(client: ConductorClient, args: argparse.Namespace, out: Output) -> None:
    flags = dict.fromkeys(args.flag, True)
    out.show(await client.register_batch(args.batch_id, args.essay_ids, flags), registered)


async def resolve(client: ConductorClient, args: argparse.Namespace, out: Output) -> None:
    flags = dict.fromkeys(args.flag, True)
    resolved = await client.resolve_pipeline(args.batch_id, args.target, flags, dry_run=True)
    out.show(resolved, resolution)


async def validate(client: ConductorClient, args: argparse.Namespace, out: Output) -> None:
    flags = dict.fromkeys(args.flag, True)
    out.show(await client.validate_prerequisites(args.batch_id, args.step, flags), validated)


async def record(client: ConductorClient, args: argparse.Namespace, out: Output) -> None:
    error = None
    if args.error_code or args.error_message:
        error = events_pb2.ErrorDetail(code=args.error_code, message=args.error_message)
    response = await client.record_step_outcome(
        args.batch_id,
        args.step,
        args.essay_id,
        succeeded=args.outcome == "succeeded",
        event_id=args.event_id,
        output_storage_id=args.output,
        run_id=args.run_id,
        attempt=args.attempt,
        error=error,
    )
    out.show(response, recorded)


async def state(client: ConductorClient, args: argparse.Namespace, out: Output) -> None:
    out.show(await client.get_batch_pipeline_state(args.batch_id), state_table)


async def reopen(client: ConductorClient, args: argparse.Namespace, out: Output) -> None:
    response = await client.reopen_essays(args.batch_id, args.run_id, args.attempt, args.step)
    out.show(response, reopened)


async def expire(client: ConductorClient, args: argparse.Namespace, out: Output) -> None:
    response = await client.expire_step(args.batch_id, args.step, args.run_id, args.attempt)
    out.show(response, expired)


async def outcomes(client: ConductorClient, args: argparse.Namespace, out: Output) -> None:
    out.show(await client.get_essay_outcomes(args.batch_id, args.essay_ids), outcomes_table)


def add_commands(actions: Subparsers, common: argparse.ArgumentParser) -> None:
    """The conductor group's commands, each with ``run`` set to its coroutine."""

    def command(name: str, run: Any, help: str) -> argparse.ArgumentParser:
        return add_command(actions, common, name, run, help)

    def flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--flag", action="append", default=[], help="a flag true for this call only (repeat)"
        )

    command("pipelines", pipelines, "the loaded pipeline definitions")
    sub = command("pipeline", pipeline, "one pipeline definition, step by step")
    sub.add_argument("name")
    sub = command("register", register, "teach the conductor a batch's essays and flags")
    sub.add_argument("batch_id")
    sub.add_argument("essay_ids", nargs="+", metavar="ESSAY_ID")
    flags(sub)
    sub = command("resolve", resolve, "dry-run a resolution: the steps a target would still run")
    sub.add_argument("batch_id")
    sub.add_argument("target", help="a pipeline or step name")
    flags(sub)
    sub = command("validate", validate, "whether a step may run now for a batch")
    sub.add_argument("batch_id")
    sub.add_argument("step")
    flags(sub)
    sub = command("record", record, "record one essay's outcome of one step (as a worker does)")
    sub.add_argument("batch_id")
    sub.add_argument("step")
    sub.add_argument("essay_id")
    sub.add_argument("outcome", choices=["succeeded", "failed"])
    sub.add_argument("--run-id", default="", help="the run whose command it answers")
    sub.add_argument("--attempt", type=int, default=0, help="that command's attempt (0: 1)")
    sub.add_argument("--error-code", default="")
    sub.add_argument("--error-message", default="")
    sub.add_argument("--output", default="", help="content-store id of the step's output")
    sub.add_argument("--event-id", default="", help="id of the report, for tracing")
    sub = command("state", state, "per-step counts and status of a batch")
    sub.add_argument("batch_id")
    sub = command(
        "reopen", reopen, "reopen a run's failed essays at a new attempt (RetryRun's part)"
    )
    sub.add_argument("batch_id")
    sub.add_argument("run_id")
    sub.add_argument("--attempt", type=int, required=True, help="the run's new attempt, 2 or more")
    sub.add_argument("--step", action="append", required=True, help="a step to reopen (repeat)")
    sub = command("expire", expire, "time out a step's essays without an outcome")
    sub.add_argument("batch_id")
    sub.add_argument("step")
    sub.add_argument("--run-id", required=True, help="the run whose dispatch timed out")
    sub.add_argument("--attempt", type=int, default=0, help="its attempt (0: 1)")
    sub = command("outcomes", outcomes, "every step result of some essays of a batch")
    sub.add_argument("batch_id")
    sub.add_argument("essay_ids", nargs="+", metavar="ESSAY_ID")
