"""Run every ``bench/<name>.py`` and refresh the summary table of ``docs/benchmarks.md``.

Each benchmark prints, as its last line, one JSON object with ``bench``, ``ours``, ``baseline``,
``unit`` and ``ratio``. This script runs them one after another (never in parallel: they would
measure each other), keeps their full output under ``.cache/bench/``, and rewrites the block
between the summary markers of ``docs/benchmarks.md``; the hand-written sections stay.

Usage: ``python scripts/bench_report.py [--quick] [NAME ...]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- summary:start -->", "<!-- summary:end -->"


def run(name: str, quick: bool) -> dict[str, object]:
    command = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else [])]
    print(f"== {' '.join(command[1:])}", flush=True)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    log = ROOT / ".cache" / "bench" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(result.stdout + result.stderr)
    print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        raise SystemExit(f"bench {name} failed (exit {result.returncode}); see {log}")
    figures: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def _rows(block: str) -> dict[str, str]:
    """The rows of an existing summary table, by bench name (kept for benches not re-run)."""
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("bench", "---"):
            rows[cells[0]] = line
    return rows


def table(results: list[dict[str, object]], quick: bool, previous: str) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = _rows(previous)
    for r in results:
        rows[str(r["bench"])] = (
            f"| {r['bench']} | {r['ours']:,} | {r['baseline']:,} | {r['unit']} | {r['ratio']} "
            f"| {when}{' (quick)' if quick else ''} |"
        )
    lines = [
        START,
        "Ratios measured on this 2-core shared machine, each against its baseline in the same run.",
        "",
        "| bench | ours | baseline | unit | ratio | measured |",
        "|---|---|---|---|---|---|",
        *(rows[name] for name in sorted(rows)),
        END,
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args()
    names = args.names or sorted(
        p.stem for p in (ROOT / "bench").glob("*.py") if p.stem != "__init__"
    )
    results = [run(name, args.quick) for name in names]
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    previous = text[text.index(START) : text.index(END)] if START in text and END in text else ""
    block = table(results, args.quick, previous)
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        head, _, rest = text.partition("\n\n")
        text = f"{head}\n\n{block}\n\n{rest}"
    DOC.write_text(text)
    print(f"updated {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
