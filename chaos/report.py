"""The report: one row per scenario, the problems behind each failed row, and the notes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chaos.check.findings import Findings

COLUMNS = (
    ("scenario", 20),
    ("records", 8),
    ("lost", 5),
    ("counted twice", 13),
    ("stuck", 5),
    ("failed RPCs", 11),
    ("unavailable", 11),
    ("time to recover", 15),
    ("verdict", 7),
)


@dataclass
class Row:
    """One scenario's result. ``recover`` is in seconds; ``recover_what`` says from what to
    what. ``unavailable`` counts calls that ended UNAVAILABLE (tolerated where a server or
    PostgreSQL is down; then not in ``failed_rpcs``)."""

    scenario: str
    records: int = 0
    findings: Findings = field(default_factory=Findings)
    failed_rpcs: int = 0
    unavailable: int = 0
    calls: int = 0
    recover: float | None = None
    recover_what: str = ""
    seconds: float = 0.0
    logs: str = ""

    @property
    def verdict(self) -> str:
        return "FAIL" if self.findings.problems else "PASS"


def _cells(row: Row) -> list[str]:
    f = row.findings
    recover = "-" if row.recover is None else f"{row.recover:.2f} s"
    return [
        row.scenario,
        str(row.records),
        str(f.lost),
        str(f.counted_twice),
        str(f.stuck),
        str(row.failed_rpcs),
        f"{row.unavailable}/{row.calls}",
        recover,
        row.verdict,
    ]


def table(rows: Sequence[Row]) -> str:
    head = "  ".join(f"{name:>{width}}" for name, width in COLUMNS)
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = _cells(row)
        lines.append(
            "  ".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, COLUMNS, strict=True))
        )
    return "\n".join(lines)


def details(rows: Sequence[Row]) -> str:
    """Per scenario: what its time to recover measures, its problems, its notes, its logs."""
    lines = []
    for row in rows:
        lines.append(f"{row.scenario} ({row.seconds:.0f} s): {row.verdict}")
        if row.recover_what:
            lines.append(f"  time to recover: {row.recover_what}")
        lines += [f"  PROBLEM: {problem}" for problem in row.findings.problems]
        lines += [f"  note: {note}" for note in row.findings.notes]
        if row.logs and row.findings.problems:
            lines.append(f"  logs: {row.logs}")
    return "\n".join(lines)


def write_json(rows: Sequence[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = [{**asdict(row), "verdict": row.verdict} for row in rows]
    path.write_text(json.dumps(data, indent=2))
