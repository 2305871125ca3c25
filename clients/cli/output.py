"""Where a command's result goes: protobuf JSON with ``--json``, else something to read (rich).

Rich writes plain text, without colours or cursor movement, when stdout is not a terminal (a
pipe, a file, CI); ``NO_COLOR`` turns colours off on a terminal too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from clients.enums import RunStatus, RunStepStatus, StepStatus

Shown = TypeVar("Shown", bound=Message)

STYLES = {
    "COMPLETED": "green",
    "SATISFIED": "green",
    "SUCCEEDED": "green",
    "RECORDED": "green",
    "COMPLETED_WITH_FAILURES": "yellow",
    "FAILED": "red",
    "UNSATISFIED": "red",
    "BLOCKED": "red",
    "SKIPPED_DUE_TO_DEPENDENCY_FAILURE": "red",
    "RUNNING": "cyan",
    "DISPATCHED": "cyan",
    "IN_PROGRESS": "cyan",
    "CANCELLED": "magenta",
}


class Output:
    """A command's stdout: ``json`` for scripts, ``show`` for people."""

    def __init__(self, as_json: bool, console: Console | None = None) -> None:
        self.as_json = as_json
        self.console = console or _console()

    def json(self, message: Message) -> None:
        print(json_format.MessageToJson(message, indent=2), flush=True)

    def json_line(self, message: Message) -> None:
        """One compact JSON object per line (streams)."""
        print(json.dumps(json_format.MessageToDict(message)), flush=True)

    def show(self, message: Shown, view: Callable[[Shown], RenderableType]) -> None:
        """``message`` as protobuf JSON with ``--json``, else as ``view`` renders it."""
        if self.as_json:
            self.json(message)
        else:
            self.console.print(view(message))

    def line(self, text: str | Text) -> None:
        self.console.print(text)


# Lines are cheap in a pipe or a log and folded ids are not: wide unless COLUMNS says otherwise.
PLAIN_WIDTH = 160
FREE_TEXT = {"description", "message", "error", "labels", "steps", "output"}


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = PLAIN_WIDTH
    return console


def status_text(name: str) -> Text:
    """An enum member's name, coloured by what it means."""
    return Text(name, style=STYLES.get(name, "dim" if name in _QUIET else ""))


_QUIET = {"PENDING", "WAITING", "NOT_STARTED", "SKIPPED_ALREADY_SATISFIED", "UNSPECIFIED"}


def when(stamp: timestamp_pb2.Timestamp, has: bool = True) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SSZ`` (UTC); empty when unset."""
    if not has or (stamp.seconds == 0 and stamp.nanos == 0):
        return ""
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ")


def table(*columns: str, title: str = "") -> Table:
    """A table in the CLI's one style; a column named with a leading ``>`` is right-aligned.
    Free text (descriptions, messages) wraps at word boundaries; ids and names fold."""
    grid = Table(
        box=box.SIMPLE_HEAD,
        title=title or None,
        title_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    for column in columns:
        name = column.lstrip(">")
        grid.add_column(
            name,
            justify="right" if column.startswith(">") else "left",
            overflow="fold",
            no_wrap=name not in FREE_TEXT,
        )
    return grid


def pairs(rows: Iterable[tuple[str, Any]]) -> Table:
    """Label and value, one per line, for one object (empty values left out)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for label, value in rows:
        if value not in ("", None, [], {}):
            grid.add_row(label, value if isinstance(value, Text) else str(value))
    return grid


def mapping(values: Any) -> str:
    """A proto map (flags, labels) as ``k=v, ...``; a flag map as its true flags."""
    items = sorted(dict(values).items())
    if all(isinstance(v, bool) for _, v in items):
        return ", ".join(k if v else f"{k}=false" for k, v in items)
    return ", ".join(f"{k}={v}" for k, v in items)


def counts(succeeded: int, failed: int, total: int, timed_out: int = 0) -> str:
    """``3/5 ok, 1 failed (1 timed out)``; a step without expected essays yet shows nothing."""
    if not total and not succeeded and not failed:
        return ""
    text = f"{succeeded}/{total} ok"
    if failed:
        text += f", {failed} failed"
        if timed_out:
            text += f" ({timed_out} timed out)"
    return text


def run_status(value: int) -> Text:
    return status_text(RunStatus(value).name)


def run_step_status(value: int) -> Text:
    return status_text(RunStepStatus(value).name)


def step_status(value: int) -> Text:
    return status_text(StepStatus(value).name)


def arrows(names: Sequence[str]) -> str:
    return " -> ".join(names)
