"""The chaos checker's rules (``chaos.check.judge``, ``chaos.watch.gaps``): what it reports for
a loss, a double count, a stall, a misplaced dead letter, a watch that missed a transition."""

from __future__ import annotations

import dataclasses

from chaos.check.judge import judge_kafka, judge_mirror, judge_outcomes, judge_progress
from chaos.check.kafka import DeadLetter
from chaos.check.postgres import Completion, Counts, PostgresFacts, Transition
from chaos.ledger import Ledger
from chaos.watch import Stream, gaps
from conductor_server.store import keys
from generated.huleedu.batch.v1 import batch_pb2 as pb

TOPIC = "ns.huleedu.essay.step.outcome.v1"


def _ledger() -> Ledger:
    ledger = Ledger()
    ledger.sent(("b", "spellcheck", "e1"), True)
    ledger.sent(("b", "spellcheck", "e2"), False)
    ledger.sent(("b", "spellcheck", "e2"), False)  # a duplicate
    ledger.batch_created("b", ["e1", "e2"])
    ledger.run_started("r", "b")
    return ledger


def _facts(**changes: object) -> PostgresFacts:
    facts = PostgresFacts(
        outcomes={("b", "spellcheck", "e1"): True, ("b", "spellcheck", "e2"): False},
        counts={("b", "spellcheck"): Counts(1, 1, 2), ("b", "nlp"): Counts(0, 0, 1)},
        essays={"b": 2},
        completions={"c1": Completion("b", "spellcheck", True)},
        unpublished=0,
        runs={"r": "completed_with_failures"},
        backlog=[],
        unsatisfied=[],
    )
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


def test_a_clean_scenario_has_no_problem() -> None:
    ledger, facts = _ledger(), _facts()
    assert (ledger.records, ledger.duplicates) == (3, 1)
    for found in (judge_outcomes(ledger, facts), judge_progress(ledger, facts)):
        assert found.problems == []
    kafka = judge_kafka(ledger, facts, {"g": {(TOPIC, 0): 0}}, [], ["c1", "c1"])
    assert kafka.problems == []
    assert "1 BatchStepCompleted repeated" in kafka.notes[0]


def test_an_outcome_not_stored_or_stored_with_the_other_result_is_lost() -> None:
    facts = _facts(outcomes={("b", "spellcheck", "e1"): False})
    found = judge_outcomes(_ledger(), facts)
    assert found.lost == 2  # e2 missing, e1 flipped
    assert found.counted_twice == 1  # and a success counted that PostgreSQL does not hold


def test_counts_above_the_stored_outcomes_are_counted_twice() -> None:
    facts = _facts(counts={("b", "spellcheck"): Counts(2, 1, 3)})
    assert judge_outcomes(_ledger(), facts).counted_twice == 1


def test_a_run_that_did_not_end_and_a_silent_complete_step_are_stuck() -> None:
    facts = _facts(runs={"r": "running"}, completions={}, unpublished=2)
    found = judge_progress(_ledger(), facts)
    assert found.stuck == 1 + 1 + 2
    assert len(found.problems) == 3


def test_dead_letters_must_be_exactly_the_poison() -> None:
    ledger = _ledger()
    ledger.poisoned((TOPIC, 0, 7), "not an envelope")
    ledger.poisoned((TOPIC, 1, 3), "unknown batch")
    good = DeadLetter((TOPIC + ".dlq", 0, 0), (TOPIC, 0, 5), "X", 10, 0, 0.1)
    poison = DeadLetter((TOPIC + ".dlq", 0, 1), (TOPIC, 0, 7), "X", 10, 0, 0.1)
    found = judge_kafka(ledger, _facts(), {}, [good, poison], ["c1"])
    assert (found.lost, found.stuck) == (1, 1)  # a good record moved aside; a poison nowhere


def test_a_partition_that_lags_and_a_completion_not_on_kafka() -> None:
    lags = {"ns.g": {(TOPIC, 0): 0, (TOPIC, 1): 4}}
    found = judge_kafka(_ledger(), _facts(), lags, [], [])
    assert (found.stuck, found.lost) == (1, 1)


def test_the_mirror_must_equal_postgresql() -> None:
    mirror = {
        keys.VERSION: "1",
        keys.ESSAYS: "2",
        "spellcheck": "1",
        "spellcheck" + keys.FAILED: str(keys.in_epoch(1, 1)),  # as the stores write it
        "spellcheck" + keys.TOTAL: "2",
        "nlp" + keys.TOTAL: "1",
    }
    found, absent = judge_mirror(_facts(), {"b": mirror})
    assert (found.problems, absent) == ([], [])
    retried = {**mirror, "spellcheck" + keys.FAILED: str(keys.in_epoch(2, 1))}
    found, _ = judge_mirror(_facts(), {"b": retried})  # a retry's epoch, the same count
    assert found.problems == []
    found, _ = judge_mirror(_facts(), {"b": {**mirror, "spellcheck": "0"}})
    assert found.stuck == 1
    found, _ = judge_mirror(_facts(), {"b": {**mirror, "spellcheck" + keys.FAILED: "0"}})
    assert found.stuck == 1
    found, absent = judge_mirror(_facts(essays={"b": 2, "other": 1}), {"b": mirror})
    assert (absent, found.problems) == (["other"], [])


def _run(status: pb.RunStatus.ValueType, *steps: tuple[str, int, int]) -> pb.PipelineRun:
    return pb.PipelineRun(
        status=status,
        steps=[pb.RunStep(step=s, status=v, succeeded=n) for s, v, n in steps],  # type: ignore[arg-type]
    )


def _update(run: pb.PipelineRun, changed: str = "") -> pb.WatchBatchResponse:
    return pb.WatchBatchResponse(run=run, changed_step=changed)


RUNNING, DONE = pb.RUN_STATUS_RUNNING, pb.RUN_STATUS_COMPLETED
DISPATCHED, SATISFIED = pb.RUN_STEP_STATUS_DISPATCHED, pb.RUN_STEP_STATUS_SATISFIED
PENDING = pb.RUN_STEP_STATUS_PENDING
HISTORY = [
    Transition(1, "spellcheck", "dispatched", 0, 0, 2, "running"),
    Transition(2, "spellcheck", "satisfied", 2, 0, 2, "running"),
    Transition(3, "nlp", "dispatched", 0, 0, 2, "running"),
    Transition(4, "nlp", "satisfied", 2, 0, 2, "completed"),
]


def test_a_watch_that_saw_every_transition_after_its_snapshot() -> None:
    updates = [
        _update(_run(RUNNING, ("spellcheck", DISPATCHED, 0), ("nlp", PENDING, 0))),
        _update(_run(RUNNING, ("spellcheck", SATISFIED, 2), ("nlp", PENDING, 0)), "spellcheck"),
        _update(_run(RUNNING, ("spellcheck", SATISFIED, 2), ("nlp", DISPATCHED, 0)), "nlp"),
        _update(_run(DONE, ("spellcheck", SATISFIED, 2), ("nlp", SATISFIED, 2)), "nlp"),
    ]
    assert gaps(Stream("b", "r", updates, "OK"), HISTORY) == []


def test_a_watch_that_missed_a_transition_or_was_cut() -> None:
    updates = [
        _update(_run(RUNNING, ("spellcheck", DISPATCHED, 0), ("nlp", PENDING, 0))),
        _update(_run(RUNNING, ("spellcheck", SATISFIED, 2), ("nlp", PENDING, 0)), "spellcheck"),
        _update(_run(DONE, ("spellcheck", SATISFIED, 2), ("nlp", SATISFIED, 2)), "nlp"),
    ]  # nlp's dispatch never shown: 2 changes, and a snapshot unlike the state after 2
    assert gaps(Stream("b", "r", updates, "OK"), HISTORY)
    assert gaps(Stream("b", "r", updates[:2], "UNAVAILABLE"), HISTORY) == ["ended UNAVAILABLE"]
