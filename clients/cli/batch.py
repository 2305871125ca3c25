"""``huleedu batch ...``: the BatchService's RPCs (batches, runs, essays)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from clients.batch import BatchClient
from clients.cli import views
from clients.cli.errors import CommandError, reaching
from clients.cli.options import add_command, credentials, flag_setting, key_value, moment
from clients.cli.output import Output
from clients.cli.watch import watch
from clients.enums import EssayView, RunStatus
from generated.huleedu.batch.v1 import batch_pb2 as pb

Subparsers = Any  # argparse's _SubParsersAction is private


async def serve(args: argparse.Namespace, out: Output) -> None:
    """Open a BatchClient and run the chosen command with it."""
    async with BatchClient(args.batch_address, args.timeout, credentials(args)) as client:
        with reaching("the BatchService", args.batch_address, "--batch-address or BATCH_ADDRESS"):
            await args.run(client, args, out)


def _quiet_or(quiet: bool, identifier: str) -> bool:
    if quiet:
        print(identifier, flush=True)
    return quiet


async def create(client: BatchClient, args: argparse.Namespace, out: Output) -> None:
    texts = args.texts or [t for t in sys.stdin.read().split("\n\n") if t.strip()]
    batch = await client.create_batch(
        texts,
        request_id=args.request_id,
        name=args.name,
        flags=dict.fromkeys(args.flag, True),
        language=args.language,
        course_code=args.course_code,
        labels=dict(args.label),
    )
    if not _quiet_or(args.quiet, batch.batch_id):
        out.show(batch, views.batch_created)


async def start(client: BatchClient, args: argparse.Namespace, out: Output) -> None:
    started = await client.start_pipeline(args.batch_id, args.pipeline, args.request_id)
    if not _quiet_or(args.quiet, started.run.run_id):
        out.show(started, views.run_started)


async def status(client: BatchClient, args: argparse.Namespace, out: Output) -> None:
    out.show(await client.get_batch_status(args.batch_id), views.batch_status)


async def listing(client: BatchClient, args: argparse.Namespace, out: Output) -> None:
    filters: dict[str, Any] = {
        "statuses": [RunStatus[s.upper()] if s != "none" else RunStatus(0) for s in args.status],
        "labels": dict(args.label),
        "created_after": args.created_after,
        "created_before": args.created_before,
    }
    if args.all:
        found = [b async for b in client.iter_batches(args.page_size or 100, **filters)]
        out.show(pb.ListBatchesResponse(batches=found), views.batch_list)
        return
    page = await client.list_batches(args.page_size, args.page_token, **filters)
    out.show(page, views.batch_list)
    if page.next_page_token and not out.as_json:
        print(f"more: --page-token {page.next_page_token} (or --all)", file=sys.stderr)


async def watching(client: BatchClient, args: argparse.Namespace, out: Output) -> None:
    await watch(client, args.batch_id, args.run_id, out)


async def spellcheck(client: BatchClient, args: argparse.Namespace, out: Output) -> None:
    response = await client.trigger_spellcheck(args.text, args.language)
    out.show(response, views.spellcheck_queued)


async def _run_id(client: BatchClient, batch_id: str, given: str) -> str:
    """``given``, or the batch's newest run."""
    if given:
        return given
    runs = (await client.get_batch_status(batch_id)).runs
    if not runs:
        raise CommandError(f"batch {batch_id} has no run")
    return runs[0].run_id


async def cancel(client: BatchClient, args: argparse.Namespace, out: Output) -> None:
    run_id = await _run_id(client, args.batch_id, args.run_id)
    run = await client.cancel_run(args.batch_id, run_id, args.reason)
    if not _quiet_or(args.quiet, run.run_id):
        out.show(run, views.run_cancelled)


async def retry(client: BatchClient, args: argparse.Namespace, out: Output) -> None:
    run_id = await _run_id(client, args.batch_id, args.run_id)
    retried = await client.retry_run(args.batch_id, run_id, args.step, args.request_id)
    if not _quiet_or(args.quiet, retried.run.run_id):
        out.show(retried, views.run_retried)


async def update(client: BatchClient, args: argparse.Namespace, out: Output) -> None:
    """Flags and labels change one by one: the batch's others are kept (the RPC replaces a map
    whole, so the command sends the current map with the changes)."""
    changes: dict[str, Any] = {}
    if args.flag or args.label:
        current = (await client.get_batch_status(args.batch_id)).batch.metadata
        if args.flag:
            changes["flags"] = dict(current.flags) | dict(args.flag)
        if args.label:
            labels = dict(current.labels) | dict(args.label)
            changes["labels"] = {k: v for k, v in labels.items() if v}  # KEY= removes KEY
    if args.name is not None:
        changes["name"] = args.name
    if args.course_code is not None:
        changes["course_code"] = args.course_code
    if not changes:
        raise CommandError("nothing to update: give --flag, --label, --name or --course-code")
    out.show(await client.update_batch(args.batch_id, **changes), views.batch_updated)


async def essay(client: BatchClient, args: argparse.Namespace, out: Output) -> None:
    view = EssayView.FULL if args.text else EssayView.BASIC
    out.show(await client.get_essay(args.essay_id, args.batch, view), views.essay_detail)


async def essays(client: BatchClient, args: argparse.Namespace, out: Output) -> None:
    if args.all:
        found = [e async for e in client.iter_essays(args.batch_id, args.page_size or 100)]
        out.show(pb.ListEssaysResponse(essays=found), views.essays_page)
        return
    page = await client.list_essays(args.batch_id, args.page_size, args.page_token)
    out.show(page, views.essays_page)
    if page.next_page_token and not out.as_json:
        print(f"more: --page-token {page.next_page_token} (or --all)", file=sys.stderr)


def add_commands(actions: Subparsers, common: argparse.ArgumentParser) -> None:
    """The batch group's commands, each with ``run`` set to its coroutine."""

    def command(name: str, run: Any, help: str) -> argparse.ArgumentParser:
        return add_command(actions, common, name, run, help)

    def quiet(parser: argparse.ArgumentParser, what: str) -> None:
        parser.add_argument("-q", "--quiet", action="store_true", help=f"print only the {what}")

    sub = command(
        "create", create, "create a batch (texts as arguments, or stdin split on blank lines)"
    )
    sub.add_argument("texts", nargs="*", metavar="TEXT")
    sub.add_argument("--flag", action="append", default=[], help="set a batch flag (repeat)")
    sub.add_argument("--label", action="append", default=[], type=key_value, metavar="KEY=VALUE")
    sub.add_argument("--name", default="")
    sub.add_argument("--course-code", default="")
    sub.add_argument("--language", default="", help="BCP 47 tag of the essays (default en)")
    sub.add_argument("--request-id", default="", help="idempotency key")
    quiet(sub, "batch id")

    sub = command("start", start, "start a pipeline run (a pipeline or a step name)")
    sub.add_argument("batch_id")
    sub.add_argument("pipeline")
    sub.add_argument("--request-id", default="", help="idempotency key")
    quiet(sub, "run id")

    sub = command("status", status, "a batch, its runs and the newest run's steps")
    sub.add_argument("batch_id")

    sub = command("list", listing, "batches, newest first")
    sub.add_argument("--page-size", type=int, default=0, help="1-500 (default 50)")
    sub.add_argument("--page-token", default="")
    sub.add_argument("--all", action="store_true", help="every page")
    statuses = [s.name.lower() for s in RunStatus if s] + ["none"]
    sub.add_argument(
        "--status",
        action="append",
        default=[],
        choices=statuses,
        help="only batches whose newest run has this status (none: no run yet; repeat)",
    )
    sub.add_argument(
        "--label", action="append", default=[], type=key_value, metavar="KEY=VALUE",
        help="only batches with this label (repeat: all of them)",
    )  # fmt: skip
    sub.add_argument("--created-after", type=moment, help="ISO date or time, inclusive")
    sub.add_argument("--created-before", type=moment, help="ISO date or time, exclusive")

    sub = command("watch", watching, "follow a run until it ends: progress per step")
    sub.add_argument("batch_id")
    sub.add_argument("--run-id", default="", help="default: the newest run")

    sub = command("spellcheck", spellcheck, "spellcheck one text, outside any batch")
    sub.add_argument("text")
    sub.add_argument("--language", default="")

    sub = command("cancel", cancel, "cancel an active run (nothing more is dispatched)")
    sub.add_argument("batch_id")
    sub.add_argument("run_id", nargs="?", default="", help="default: the newest run")
    sub.add_argument("--reason", default="", help="shown on the run")
    quiet(sub, "run id")

    sub = command("retry", retry, "a new attempt of a finished run, for the essays that failed")
    sub.add_argument("batch_id")
    sub.add_argument("run_id", nargs="?", default="", help="default: the newest run")
    sub.add_argument(
        "--step", action="append", default=[], help="only this step and its dependants (repeat)"
    )
    sub.add_argument("--request-id", default="", help="idempotency key")
    quiet(sub, "run id")

    sub = command("update", update, "change a batch's flags, labels, name or course code")
    sub.add_argument("batch_id")
    sub.add_argument(
        "--flag", action="append", default=[], type=flag_setting, metavar="NAME[=true|false]",
        help="set (or with =false unset) one flag, keeping the others (repeat)",
    )  # fmt: skip
    sub.add_argument(
        "--label", action="append", default=[], type=key_value, metavar="KEY=VALUE",
        help="set one label, keeping the others; KEY= removes it (repeat)",
    )  # fmt: skip
    sub.add_argument("--name", default=None)
    sub.add_argument("--course-code", default=None)

    sub = command("essay", essay, "one essay: its step results (and texts with --text)")
    sub.add_argument("essay_id")
    sub.add_argument("--batch", default="", help="the essay's batch (another batch: NOT_FOUND)")
    sub.add_argument("--text", action="store_true", help="also the original and latest text")

    sub = command("essays", essays, "a batch's essays with their step results, in batch order")
    sub.add_argument("batch_id")
    sub.add_argument("--page-size", type=int, default=0, help="1-1000 (default 100)")
    sub.add_argument("--page-token", default="")
    sub.add_argument("--all", action="store_true", help="every page")
