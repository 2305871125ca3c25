"""Run the benchmarks and write ``docs/benchmarks.md``: each one's method and current figures.

Each ``bench/<name>.py`` documents its method in its module docstring and prints a human table,
then, as its last line, one JSON object with at least ``bench``, ``ours``, ``baseline``,
``unit`` and ``ratio``. This script runs the named benchmarks (all by default) one after
another (never in parallel: they would measure each other), keeps their full output under
``.cache/bench/``, and writes the document: a summary table, then per benchmark its method, the
table and JSON of its latest run, and when it ran. A benchmark not run this time keeps the
section it had.

Usage: ``python scripts/bench_report.py [--quick] [NAME ...]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Each benchmark measures what a user waits for against a baseline measured in the same run on the
same machine (2 cores, shared and noisy: the ratio is the figure that holds, absolute times drift).
This file is written by `make bench` (`scripts/bench_report.py`); every figure in it comes from the
run named in its section.
"""
_SECTION = re.compile(r"<!-- bench:(\w+):start -->\n(.*?)<!-- bench:\1:end -->", re.S)


def names() -> list[str]:
    return sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem != "__init__")


def run(name: str, quick: bool) -> tuple[str, dict[str, object]]:
    """The benchmark's printed output (without the JSON line) and its JSON figures."""
    command = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else [])]
    print(f"== {' '.join(command[1:])}", flush=True)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    log = ROOT / ".cache" / "bench" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(result.stdout + result.stderr)
    print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        raise SystemExit(f"bench {name} failed (exit {result.returncode}); see {log}")
    lines = result.stdout.strip().splitlines()
    return "\n".join(lines[:-1]).strip(), json.loads(lines[-1])


def section(name: str, output: str, figures: dict[str, object], quick: bool) -> str:
    module = importlib.import_module(f"bench.{name}")
    method = (module.__doc__ or "").strip()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"## {name}\n\n{method}\n\n"
        f"### Latest run ({when}{', --quick' if quick else ''})\n\n"
        f"```\n{output}\n```\n\n"
        f"```json\n{json.dumps(figures)}\n```\n"
    )


def summary(figures: dict[str, dict[str, object]]) -> str:
    rows = [
        "| bench | ours | baseline | unit | ratio |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(figures):
        f = figures[name]
        rows.append(f"| {name} | {f['ours']:,} | {f['baseline']:,} | {f['unit']} | {f['ratio']} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    sections = dict(_SECTION.findall(DOC.read_text())) if DOC.exists() else {}
    figures: dict[str, dict[str, object]] = {}
    for name, body in sections.items():
        found = re.search(r"```json\n(.*?)\n```", body, re.S)
        if found:
            figures[name] = json.loads(found.group(1))
    for name in args.names or names():
        output, figures[name] = run(name, args.quick)
        sections[name] = section(name, output, figures[name], args.quick)
    parts = [HEADER, summary(figures), ""]
    for name in sorted(sections):
        parts.append(f"<!-- bench:{name}:start -->\n{sections[name]}<!-- bench:{name}:end -->\n")
    DOC.write_text("\n".join(parts))
    print(f"updated {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
