"""The counting rule under retries and timeouts, against a reference model written from the rule.

The rule (``conductor_server.domain.counting``): within an attempt the first outcome of an essay
counts (repeats are DUPLICATE, the other outcome a CONFLICT); a retry (``reopen``) starts a new
attempt of a run, after which that attempt's outcome counts and one of an earlier attempt of the
same run is SUPERSEDED; an outcome after a timeout is LATE. Random sequences of outcomes, retries
and timeouts over a two-step table must leave the tally exactly where the model says, with each
step completing once per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from conductor_server.domain.counting import BatchTally, StepTable, Verdict
from conductor_server.domain.model import Outcome, StepDefinition

S, F, T = Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT
ESSAYS = ("e1", "e2", "e3")
TABLE = StepTable(
    {
        "a": StepDefinition("a", "w", "a", min_success_ratio=0.5),
        "b": StepDefinition("b", "w", "b", depends_on=("a",), min_success_ratio=0.0),
    }
)


@dataclass
class Model:
    """Per (essay, step): the counted (outcome, run, attempt), or the (run, attempt) it is open
    at; whether b's expected essays are known; completions seen."""

    results: dict[tuple[str, str], tuple[Outcome, str, int]] = field(default_factory=dict)
    open_at: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    b_ready: bool = False
    completions: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0})

    def expected(self, step: str, essay: str) -> bool:
        if step == "a":
            return True
        counted = self.results.get((essay, "a"))
        return self.b_ready and counted is not None and counted[0] is S

    def complete(self, step: str) -> bool:
        expected = [e for e in ESSAYS if self.expected(step, e)]
        return all((e, step) in self.results for e in expected)

    def counts(self, step: str) -> tuple[int, int, int, int | None]:
        outcomes = [self.results[e, step][0] for e in ESSAYS if (e, step) in self.results]
        total = sum(self.expected(step, e) for e in ESSAYS)
        known = step == "a" or self.b_ready
        return (
            outcomes.count(S),
            len(outcomes) - outcomes.count(S),
            outcomes.count(T),
            (total if known else None),
        )

    def _after(self, step: str, was_complete: bool) -> None:
        """Note a completion, and b becoming ready when a completes satisfied."""
        if not was_complete and self.complete(step):
            self.completions[step] += 1
            if step == "a" and not self.b_ready:
                succeeded = sum(self.results[e, "a"][0] is S for e in ESSAYS)
                if succeeded / len(ESSAYS) >= 0.5:
                    was_b = self.complete("b") and False
                    self.b_ready = True
                    self._after("b", was_b)

    def mark(self, essay: str, step: str) -> tuple[str, int] | None:
        counted = self.results.get((essay, step))
        return (counted[1], counted[2]) if counted else self.open_at.get((essay, step))

    def record(self, step: str, essay: str, outcome: Outcome, run: str, attempt: int) -> Verdict:
        if not self.expected(step, essay):
            return Verdict.NOT_EXPECTED
        mark = self.mark(essay, step)
        if mark is not None and mark[0] == run and attempt < mark[1]:
            return Verdict.SUPERSEDED
        counted = self.results.get((essay, step))
        if counted is not None:
            if counted[0] is T:
                return Verdict.LATE
            return Verdict.DUPLICATE if counted[0] is outcome else Verdict.CONFLICT
        was_complete = self.complete(step)
        was_b_complete = self.complete("b")
        self.results[essay, step] = (outcome, run, attempt)
        self.open_at.pop((essay, step), None)
        self._after(step, was_complete)
        if step == "a" and self.b_ready:
            self._after("b", was_b_complete)
        return Verdict.RECORDED

    def reopen(self, step: str, run: str, attempt: int) -> list[str]:
        if step == "b" and not self.b_ready:
            return []
        opened = []
        for essay in ESSAYS:
            if not self.expected(step, essay):
                continue
            counted = self.results.get((essay, step))
            if counted is not None and counted[0] is S:
                continue
            if counted is None and self.open_at.get((essay, step)) == (run, attempt):
                opened.append(essay)
                continue
            mark = self.mark(essay, step)
            if mark is not None and mark[0] == run and mark[1] >= attempt:
                continue
            self.results.pop((essay, step), None)
            self.open_at[essay, step] = (run, attempt)
            opened.append(essay)
        return opened

    def missing(self, step: str, run: str, attempt: int) -> list[str]:
        waiting = []
        for essay in ESSAYS:
            if not self.expected(step, essay) or (essay, step) in self.results:
                continue
            mark = self.open_at.get((essay, step))
            if mark is None or mark[0] != run or mark[1] <= attempt:
                waiting.append(essay)
        return waiting


steps = st.sampled_from(["a", "b"])
runs = st.sampled_from(["r1", "r2"])
attempts = st.integers(1, 3)
operations = st.one_of(
    st.tuples(
        st.just("record"), steps, st.sampled_from(ESSAYS), st.sampled_from([S, F]), runs, attempts
    ),
    st.tuples(st.just("reopen"), steps, runs, st.integers(2, 3)),
    st.tuples(st.just("expire"), steps, runs, attempts),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(operations, max_size=40))
def test_the_tally_follows_the_rule(ops: list[tuple[object, ...]]) -> None:
    tally = BatchTally(TABLE, TABLE.initial_counts(len(ESSAYS)), {}, frozenset(ESSAYS))
    model = Model()
    epochs_completed: dict[str, set[int]] = {"a": set(), "b": set()}

    def note(step: str, entry_completed: bool, cascaded: tuple[str, ...]) -> None:
        for name in ((step,) if entry_completed else ()) + cascaded:
            epoch = tally.counts[name].epoch
            assert epoch not in epochs_completed[name], f"{name} completed twice in epoch {epoch}"
            epochs_completed[name].add(epoch)

    for op in ops:
        if op[0] == "record":
            _, step, essay, outcome, run, attempt = op
            entry = tally.record(step, essay, outcome, run, attempt)  # type: ignore[arg-type]
            assert entry.verdict is model.record(step, essay, outcome, run, attempt), op  # type: ignore[arg-type]
            note(step, entry.completed, entry.cascaded)  # type: ignore[arg-type]
        elif op[0] == "reopen":
            _, step, run, attempt = op
            opened = tally.reopen(step, run, attempt, ESSAYS)  # type: ignore[arg-type]
            assert opened == model.reopen(step, run, attempt), op  # type: ignore[arg-type]
        else:
            _, step, run, attempt = op
            missing = tally.missing(step, run, attempt, ESSAYS)  # type: ignore[arg-type]
            assert missing == model.missing(step, run, attempt), op  # type: ignore[arg-type]
            for essay in missing:
                entry = tally.record(step, essay, T, run, attempt)  # type: ignore[arg-type]
                assert entry.verdict is model.record(step, essay, T, run, attempt)  # type: ignore[arg-type]
                note(step, entry.completed, entry.cascaded)  # type: ignore[arg-type]
        for step in ("a", "b"):
            count = tally.counts[step]
            assert (count.succeeded, count.failed, count.timed_out, count.total) == model.counts(
                step
            ), (step, ops)
    for step in ("a", "b"):
        assert len(epochs_completed[step]) == model.completions[step], step


def test_a_late_outcome_of_a_superseded_attempt_changes_nothing() -> None:
    tally = BatchTally(TABLE, TABLE.initial_counts(len(ESSAYS)), {}, frozenset(ESSAYS))
    for essay in ESSAYS:
        tally.record("a", essay, F, "r1", 1)
    assert tally.reopen("a", "r1", 2, ESSAYS) == list(ESSAYS)
    before = (tally.counts["a"].succeeded, tally.counts["a"].failed)
    assert tally.record("a", "e1", S, "r1", 1).verdict is Verdict.SUPERSEDED
    assert (tally.counts["a"].succeeded, tally.counts["a"].failed) == before == (0, 0)
    assert tally.record("a", "e1", S, "r1", 2).verdict is Verdict.RECORDED
    assert tally.counts["a"].epoch == 2


def test_a_dependant_that_gains_an_essay_completes_again_in_a_new_epoch() -> None:
    tally = BatchTally(TABLE, TABLE.initial_counts(len(ESSAYS)), {}, frozenset(ESSAYS))
    for essay, outcome in zip(ESSAYS, (S, S, F), strict=True):
        tally.record("a", essay, outcome, "r1", 1)
    assert [tally.record("b", e, S, "r1", 1).completed for e in ("e1", "e2")] == [False, True]
    assert tally.counts["b"].epoch == 1
    tally.reopen("a", "r1", 2, ESSAYS)
    tally.record("a", "e3", S, "r1", 2)
    assert (tally.counts["b"].total, tally.counts["b"].epoch) == (3, 2)
    assert tally.record("b", "e3", F, "r1", 2).completed
