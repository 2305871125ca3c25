"""The run of ``python -m chaos``: the scenarios chosen, one after another, then the report.

Uses the devstack of ``DEVSTACK_STATE_DIR`` (or ``.devstack``), starting it if it is down; the
scenarios stop, kill and start its backends. A backend a failed scenario left down is started
again before the next one. Exits 1 when any scenario fails.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from bench.harness.backends import Backends
from chaos.check.findings import Findings
from chaos.profile import FULL, SHORT
from chaos.report import Row, details, table, write_json
from chaos.scenarios import SCENARIOS
from chaos.trial import Context
from mesh.runtime import tune_gc
from scripts.devstack import NAMES, Devstack

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".cache" / "chaos"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description="The mesh's fault scenarios on the devstack's backends, each checked from "
        "PostgreSQL, Redis and Kafka; one row per scenario; exit 1 if any fails.",
    )
    parser.add_argument("--short", action="store_true", help="the short form (CI)")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(SCENARIOS), metavar="NAME", help="run only these"
    )
    parser.add_argument(
        "--skip", nargs="+", choices=sorted(SCENARIOS), metavar="NAME", default=[], help="leave out"
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser


async def _scenario(ctx: Context, name: str) -> Row:
    began = time.monotonic()
    try:
        row = await SCENARIOS[name](ctx)
    except Exception as exc:  # a scenario that could not run fails, with why
        log.exception("scenario %s could not run", name)
        found = Findings()
        found.problem(f"the scenario could not run: {type(exc).__name__}: {exc}")
        found.notes.append(traceback.format_exc(limit=4).replace("\n", " | "))
        row = Row(name, findings=found, seconds=time.monotonic() - began, logs=str(ctx.logs))
    finally:
        for backend in NAMES:  # a scenario that failed midway may have left one down
            if backend in _down(ctx.stack):
                await asyncio.to_thread(ctx.stack.start, backend)
    return row


def _down(stack: Devstack) -> set[str]:
    return {rec.name for rec, state in stack.status() if state == "stopped"}


async def _run(names: Sequence[str], ctx: Context) -> list[Row]:
    rows = []
    for name in names:
        print(f"chaos: {name} ...", file=sys.stderr, flush=True)
        row = await _scenario(ctx, name)
        print(f"chaos: {name}: {row.verdict} in {row.seconds:.0f} s", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for name, scenario in SCENARIOS.items():
            print(f"{name:<20} {' '.join((scenario.__doc__ or '').split())}")
        return 0
    profile = SHORT if args.short else FULL
    shutil.rmtree(OUT / "logs", ignore_errors=True)
    (OUT / "logs").mkdir(parents=True)
    logging.basicConfig(
        filename=OUT / "chaos.log",
        filemode="w",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stack = Devstack()
    stack.up()
    backends = Backends(stack.redis_url, stack.database_url, stack.kafka_bootstrap)
    ctx = Context(profile, stack, backends, OUT / "logs")
    tune_gc(10_000)
    began = time.monotonic()
    # asyncio's own loop: its subprocesses start with vfork (uvloop's libuv forks, and gRPC's
    # fork handlers then run in a process whose gRPC threads are busy)
    chosen = [name for name in args.only or SCENARIOS if name not in args.skip]
    rows = asyncio.run(_run(chosen, ctx))
    write_json(rows, OUT / "report.json")
    print(table(rows))
    print()
    print(details(rows))
    failed = [row.scenario for row in rows if row.verdict != "PASS"]
    print(
        f"\nchaos ({profile.name}): {len(rows) - len(failed)} of {len(rows)} scenarios passed "
        f"in {time.monotonic() - began:.0f} s"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0
