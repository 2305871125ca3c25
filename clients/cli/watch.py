"""``huleedu batch watch``: a run's progress until it ends.

On a terminal, a live view: the run's status line and, per step, a bar (succeeded green, failed
red, of the step's expected essays) with its counts and status. Elsewhere (a pipe, a file, CI),
one plain line per update. With ``--json``, one JSON object per update. The SDK re-opens a stream
cut with UNAVAILABLE; each attempt is announced on its own line (on stderr with ``--json``).
"""

from __future__ import annotations

import sys
import time

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from clients.batch import BatchClient
from clients.cli.errors import short_cause
from clients.cli.output import Output, counts, run_step_status
from clients.cli.views import run_header, watch_line
from clients.enums import RunStatus
from clients.errors import RpcError
from generated.huleedu.batch.v1 import batch_pb2 as pb

BAR_WIDTH = 30
BAR = "━"


def bar(succeeded: int, failed: int, total: int, width: int = BAR_WIDTH) -> Text:
    """``width`` cells: succeeded essays green, failed red, the rest of ``total`` dim."""
    ok = round(width * succeeded / total) if total else 0
    bad = min(round(width * failed / total) if total else 0, width - ok)
    text = Text()
    text.append(BAR * ok, style="green")
    text.append(BAR * bad, style="red")
    text.append(BAR * (width - ok - bad), style="bright_black")
    return text


def progress(run: pb.PipelineRun, elapsed: float | None = None) -> RenderableType:
    """The run's status line and a progress bar per step."""
    header = run_header(run)
    if elapsed is not None:
        header.append(f"  {elapsed:.1f}s", style="dim")
    steps = Table.grid(padding=(0, 1))
    for step in run.steps:
        steps.add_row(
            step.step,
            bar(step.succeeded, step.failed, step.total),
            counts(step.succeeded, step.failed, step.total, step.timed_out),
            run_step_status(step.status),
        )
    return Group(header, steps)


class LiveRun:
    """What the live view shows: the latest run, with the time since the watch began."""

    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        self.run: pb.PipelineRun | None = None
        self.began = time.monotonic()

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.run is None:
            yield Text(f"waiting for the run of batch {self.batch_id} ...", style="dim")
        else:
            yield progress(self.run, time.monotonic() - self.began)


async def watch(client: BatchClient, batch_id: str, run_id: str, out: Output) -> None:
    """Follow the run (the batch's newest when ``run_id`` is empty) until it ends."""

    def resuming(error: RpcError, pause: float) -> None:
        note = (
            f"stream interrupted ({error.code.name}: {short_cause(error.message)}); "
            f"reconnecting in {pause:.1f}s"
        )
        if out.as_json:
            print(note, file=sys.stderr, flush=True)
        else:
            out.console.print(Text(note, style="yellow"), soft_wrap=True)

    updates = client.watch_batch(batch_id, run_id, on_resume=resuming)
    last: pb.PipelineRun | None = None
    if out.as_json:
        async for update in updates:
            out.json_line(update)
        return
    if out.console.is_terminal:
        shown = LiveRun(batch_id)
        with Live(shown, console=out.console, refresh_per_second=4):
            async for update in updates:
                shown.run = last = update.run
    else:
        async for update in updates:
            if last is None:
                out.console.print(Text(f"watching {run_header(update.run).plain}"), soft_wrap=True)
            last = update.run
            out.console.print(Text(watch_line(update)), soft_wrap=True)
    if last is not None:
        out.console.print(Text(f"run {last.run_id} ended {RunStatus(last.status)}"))
