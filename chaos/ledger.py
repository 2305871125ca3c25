"""What a scenario sent: the ground truth the checker holds the backends to.

The ledger knows every distinct outcome the workers (or a scenario) sent, per (batch, step,
essay), and whether it was a success; how many outcome records went to Kafka, duplicates
included; every poison record, by where Kafka put it; and every batch and run the load made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

OutcomeKey = tuple[str, str, str]  # batch, step, essay
Position = tuple[str, int, int]  # topic, partition, offset


@dataclass
class Ledger:
    outcomes: dict[OutcomeKey, bool] = field(default_factory=dict)  # succeeded?
    records: int = 0  # outcome records written, duplicates and poison included
    duplicates: int = 0  # of them, repeats of an outcome already written
    poison: dict[Position, str] = field(default_factory=dict)  # -> its kind
    batches: dict[str, list[str]] = field(default_factory=dict)  # batch -> its essays
    runs: dict[str, str] = field(default_factory=dict)  # run -> its batch
    run_started_at: dict[str, float] = field(default_factory=dict)  # run -> time.monotonic()

    def sent(self, key: OutcomeKey, succeeded: bool) -> None:
        """An outcome was written (again, perhaps)."""
        self.records += 1
        if key in self.outcomes:
            self.duplicates += 1
        else:
            self.outcomes[key] = succeeded

    def batch_created(self, batch_id: str, essays: list[str]) -> None:
        self.batches[batch_id] = essays

    def run_started(self, run_id: str, batch_id: str) -> None:
        self.runs[run_id] = batch_id
        self.run_started_at.setdefault(run_id, time.monotonic())

    def poisoned(self, position: Position, kind: str) -> None:
        self.records += 1
        self.poison[position] = kind

    def runs_before(self, moment: float) -> list[str]:
        """The runs started before ``moment`` (``time.monotonic()``)."""
        return [run for run, at in self.run_started_at.items() if at < moment]
