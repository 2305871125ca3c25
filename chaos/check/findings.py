"""What the checker found in one scenario: the counts of the report's columns, and why."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Findings:
    """``lost``: outcomes (or events) sent and not counted (or not delivered); ``counted_twice``:
    counts above what was stored or sent; ``stuck``: what did not settle by the deadline (a run
    not ended, a partition's lag, an unpublished outbox row, a stale mirror). ``problems`` say
    what each is; any problem fails the scenario. ``notes`` are facts worth reading."""

    lost: int = 0
    counted_twice: int = 0
    stuck: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def problem(self, text: str, *, lost: int = 0, twice: int = 0, stuck: int = 0) -> None:
        self.problems.append(text)
        self.lost += lost
        self.counted_twice += twice
        self.stuck += stuck

    def merge(self, other: Findings, prefix: str = "") -> None:
        self.lost += other.lost
        self.counted_twice += other.counted_twice
        self.stuck += other.stuck
        self.problems += [prefix + p for p in other.problems]
        self.notes += [prefix + n for n in other.notes]
