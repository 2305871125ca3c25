"""The checker's rules: the ledger against what each backend holds. Pure functions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from chaos.check.findings import Findings
from chaos.check.kafka import DeadLetter, Lag
from chaos.check.postgres import ENDED, Counts, PostgresFacts
from chaos.check.redis import Mirror, differences
from chaos.ledger import Ledger


def _some(items: Sequence[object], limit: int = 3) -> str:
    shown = ", ".join(str(item) for item in list(items)[:limit])
    return shown + (", ..." if len(items) > limit else "")


def judge_outcomes(ledger: Ledger, facts: PostgresFacts) -> Findings:
    """Every outcome sent is stored once with its result; every count is its stored outcomes."""
    found = Findings()
    missing = [key for key in ledger.outcomes if key not in facts.outcomes]
    flipped = [key for key, ok in ledger.outcomes.items() if facts.outcomes.get(key, ok) is not ok]
    strangers = [key for key in facts.outcomes if key not in ledger.outcomes]
    if missing:
        found.problem(
            f"{len(missing)} outcomes sent, not stored: {_some(missing)}", lost=len(missing)
        )
    if flipped:
        found.problem(
            f"{len(flipped)} outcomes stored with the other result: {_some(flipped)}",
            lost=len(flipped),
        )
    if strangers:
        found.problem(
            f"{len(strangers)} outcomes stored that were never sent: {_some(strangers)}",
            twice=len(strangers),
        )
    stored: Counter[tuple[str, str, bool]] = Counter(
        (batch, step, ok) for (batch, step, _), ok in facts.outcomes.items()
    )
    for (batch, step), counts in sorted(facts.counts.items()):
        rows = Counts(stored[batch, step, True], stored[batch, step, False], counts.total)
        above = max(0, counts.succeeded - rows.succeeded) + max(0, counts.failed - rows.failed)
        below = max(0, rows.succeeded - counts.succeeded) + max(0, rows.failed - counts.failed)
        over = max(0, counts.succeeded + counts.failed - (counts.total or 0))
        if above or over:
            found.problem(
                f"{batch}/{step}: counts {counts} above its {rows.succeeded}+{rows.failed} "
                "stored outcomes or its total",
                twice=max(above, over),
            )
        if below:
            found.problem(f"{batch}/{step}: counts {counts} below its stored outcomes", lost=below)
    return found


def judge_progress(ledger: Ledger, facts: PostgresFacts) -> Findings:
    """Every run ended; every complete step has its one completion event, relayed."""
    found = Findings()
    statuses = Counter(facts.runs.get(run, "missing") for run in ledger.runs)
    found.notes.append(
        "runs: " + ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    )
    if facts.unsatisfied:
        found.notes.append(f"steps completed unsatisfied: {_some(facts.unsatisfied)}")
    open_runs = [run for run in ledger.runs if facts.runs.get(run) not in ENDED]
    if open_runs:
        found.problem(
            f"{len(open_runs)} runs did not end: {_some(open_runs)}", stuck=len(open_runs)
        )
    complete = {
        key
        for key, c in facts.counts.items()
        if c.total is not None and c.succeeded + c.failed == c.total
    }
    announced = Counter((c.batch_id, c.step) for c in facts.completions.values())
    silent = sorted(complete - set(announced))
    early = sorted(set(announced) - complete)
    repeated = sorted(key for key, n in announced.items() if n > 1)
    if silent:
        found.problem(
            f"{len(silent)} complete steps have no BatchStepCompleted: {_some(silent)}",
            stuck=len(silent),
        )
    if early or repeated:
        found.problem(
            f"BatchStepCompleted for incomplete steps {_some(early)} or more than once "
            f"{_some(repeated)}",
            twice=len(early) + len(repeated),
        )
    if facts.unpublished:
        found.problem(
            f"{facts.unpublished} outbox rows never relayed to Kafka", stuck=facts.unpublished
        )
    return found


def judge_mirror(facts: PostgresFacts, mirror: Mapping[str, Mirror]) -> tuple[Findings, list[str]]:
    """Redis's hash of each batch equals PostgreSQL's counts, and the mirror backlog is empty.
    Returns the batches Redis does not have too: by design a read brings each back (and the
    caller judges them again after one)."""
    found = Findings()
    absent = sorted(set(facts.essays) - set(mirror))
    stale = []
    for batch_id, fields in sorted(mirror.items()):
        steps = {step: c for (b, step), c in facts.counts.items() if b == batch_id}
        if diff := differences(fields, facts.essays[batch_id], steps):
            stale.append(f"{batch_id}: {'; '.join(diff)}")
    if stale:
        found.problem(
            f"{len(stale)} batches' Redis mirror differs from PostgreSQL: {_some(stale, 2)}",
            stuck=len(stale),
        )
    if facts.backlog:
        found.problem(
            f"{len(facts.backlog)} batches still in the mirror backlog", stuck=len(facts.backlog)
        )
    return found, absent


def judge_registrations(ledger: Ledger, facts: PostgresFacts) -> Findings:
    """Every batch the load made is registered with the conductor."""
    found = Findings()
    unregistered = [batch for batch in ledger.batches if batch not in facts.essays]
    if unregistered:
        found.problem(
            f"{len(unregistered)} batches unknown to the conductor: {_some(unregistered)}",
            lost=len(unregistered),
        )
    orphans = [batch for batch in facts.essays if batch not in ledger.batches]
    if orphans:
        found.notes.append(
            f"{len(orphans)} conductor registrations without a batch of the load (a CreateBatch "
            "cut short after it registered, or a scenario's own)"
        )
    return found


def judge_kafka(
    ledger: Ledger,
    facts: PostgresFacts,
    lags: Mapping[str, Lag],
    letters: Sequence[DeadLetter],
    delivered: Sequence[str],
) -> Findings:
    """Every group's lag drained; the dead letters are exactly the poison; every relayed
    completion is on its topic."""
    found = Findings()
    for group, lag in sorted(lags.items()):
        behind = {tp: n for tp, n in sorted(lag.items()) if n}
        if behind:
            found.problem(f"group {group} lags: {behind}", stuck=len(behind))
    lettered = Counter(letter.original for letter in letters)
    good = sorted(p for p in lettered if p not in ledger.poison)
    unlettered = sorted(p for p in ledger.poison if p not in lettered)
    if good:
        found.problem(f"{len(good)} good records dead-lettered: {_some(good)}", lost=len(good))
    if unlettered:
        kinds = [ledger.poison[p] for p in unlettered]
        found.problem(
            f"{len(unlettered)} poison records not dead-lettered: {_some(kinds, 9)}",
            stuck=len(unlettered),
        )
    if twice := sum(n - 1 for n in lettered.values() if n > 1):
        found.notes.append(f"{twice} dead letters repeated (at least once delivery)")
    if ledger.poison:
        found.notes.append(f"{len(lettered)} of {len(ledger.poison)} poison records dead-lettered")
    on_topic = Counter(delivered)
    relayed = [e for e, c in facts.completions.items() if c.published]
    missing = [event_id for event_id in relayed if event_id not in on_topic]
    if missing:
        found.problem(
            f"{len(missing)} relayed BatchStepCompleted not on Kafka: {_some(missing)}",
            lost=len(missing),
        )
    if repeats := sum(n - 1 for n in on_topic.values() if n > 1):
        found.notes.append(f"{repeats} BatchStepCompleted repeated on Kafka (at least once)")
    return found
