"""The state store contract: every implementation must pass ``StateContract``.

``tests/unit/test_state_memory.py`` runs it against the in-memory store,
``tests/integration/test_state_contract.py`` against PostgreSQL and the composed store.
"""

from __future__ import annotations

import pytest

from conductor_server.domain.counting import Verdict
from conductor_server.domain.model import (
    TIMED_OUT_CODE,
    BatchRegistration,
    Outcome,
    OutcomeRecord,
    StepDefinition,
    StepState,
    StepStatus,
)
from conductor_server.ports import StateStore
from conductor_server.store.errors import (
    ConflictingOutcome,
    EssayNotExpected,
    InvalidRegistration,
    RegistrationConflict,
    StepNotAllowed,
    UnknownBatch,
    UnknownStep,
)

S, F, T = Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT

# spellcheck (produces text) -> nlp, cj_assessment (ratio 0.5) -> ai_feedback; triage (ratio 0)
# -> review; scoring (requires the flag prompt_attached)
STEPS: dict[str, StepDefinition] = {
    step.name: step
    for step in (
        StepDefinition("spellcheck", "spellchecker", "spellcheck", produces_text=True),
        StepDefinition("nlp", "nlp", "nlp", depends_on=("spellcheck",)),
        StepDefinition(
            "cj_assessment",
            "cj",
            "cj_assessment",
            depends_on=("spellcheck",),
            min_success_ratio=0.5,
        ),
        StepDefinition("ai_feedback", "ai", "ai_feedback", depends_on=("nlp", "cj_assessment")),
        StepDefinition("triage", "triage", "student_matching", min_success_ratio=0.0),
        StepDefinition("review", "review", "ai_feedback", depends_on=("triage",)),
        StepDefinition("scoring", "scoring", "cj_assessment", requires=("prompt_attached",)),
    )
}
ESSAYS = ("e1", "e2", "e3", "e4")


def rec(
    step: str,
    essay: str,
    outcome: Outcome = S,
    batch: str = "b1",
    run_id: str = "",
    attempt: int = 1,
    output: str = "",
) -> OutcomeRecord:
    return OutcomeRecord(
        batch,
        step,
        essay,
        outcome,
        output,
        f"{batch}/{step}/{essay}/{attempt}",
        run_id,
        attempt,
        "" if outcome is S else "WORKER_FAILED",
        "" if outcome is S else "the worker failed it",
    )


def registration(
    batch: str = "b1", essays: tuple[str, ...] = ESSAYS, *flags: str
) -> BatchRegistration:
    return BatchRegistration(batch, essays, frozenset(flags))


async def record_all(store: StateStore, step: str, outcomes: dict[str, Outcome]) -> None:
    results = await store.record_outcomes([rec(step, e, o) for e, o in outcomes.items()])
    assert all(r.ok for r in results), [r.error for r in results]


class StateContract:
    """Behaviour every ``StateStore`` shares; subclasses provide the ``store`` fixture."""

    async def test_registering_is_idempotent_and_replaces_flags(self, store: StateStore) -> None:
        assert await store.register_batch(registration("b1", ESSAYS, "prompt_attached"))
        assert not await store.register_batch(registration("b1", tuple(reversed(ESSAYS)), "x"))
        state = await store.batch_state("b1")
        assert (state.batch_id, state.essay_count, state.flags) == ("b1", 4, frozenset({"x"}))
        assert state.version == 2
        assert not await store.register_batch(registration("b1", ESSAYS, "x"))
        assert (await store.batch_state("b1")).version == 2  # same flags: nothing changed

    async def test_another_essay_set_is_a_conflict(self, store: StateStore) -> None:
        await store.register_batch(registration())
        with pytest.raises(RegistrationConflict) as caught:
            await store.register_batch(registration("b1", ESSAYS[:3]))
        assert caught.value.batch_id == "b1"
        assert not caught.value.retriable

    @pytest.mark.parametrize("essays", [(), ("e1", "e2", "e1")])
    async def test_a_batch_needs_distinct_essays(
        self, store: StateStore, essays: tuple[str, ...]
    ) -> None:
        with pytest.raises(InvalidRegistration):
            await store.register_batch(registration("b1", essays))
        with pytest.raises(UnknownBatch):
            await store.batch_state("b1")

    async def test_unknown_batch(self, store: StateStore) -> None:
        with pytest.raises(UnknownBatch) as caught:
            await store.batch_state("nope")
        assert caught.value.batch_id == "nope"
        [result] = await store.record_outcomes([rec("spellcheck", "e1", batch="nope")])
        assert isinstance(result.error, UnknownBatch)
        assert not result.newly_recorded
        assert result.state is None

    async def test_a_new_batch_waits_on_dependencies(self, store: StateStore) -> None:
        await store.register_batch(registration())
        state = await store.batch_state("b1")
        assert [s.step for s in state.steps] == list(STEPS)
        assert state.step("spellcheck") == StepState("spellcheck", 0, 0, 4, StepStatus.NOT_STARTED)
        assert state.step("nlp") == StepState("nlp", 0, 0, 0, StepStatus.WAITING)
        assert state.step("ai_feedback").status is StepStatus.WAITING
        assert state.step("triage") == StepState("triage", 0, 0, 4, StepStatus.NOT_STARTED)

    async def test_an_outcome_counts_once(self, store: StateStore) -> None:
        await store.register_batch(registration())
        [first] = await store.record_outcomes([rec("spellcheck", "e1")])
        assert first.ok
        assert first.newly_recorded
        assert not first.completed_step
        assert first.state == StepState("spellcheck", 1, 0, 4, StepStatus.IN_PROGRESS)
        [again] = await store.record_outcomes([rec("spellcheck", "e1")])
        assert again.ok
        assert not again.newly_recorded
        assert not again.completed_step
        assert again.state == first.state
        assert (await store.batch_state("b1")).step("spellcheck").succeeded == 1

    async def test_a_different_second_outcome_is_a_conflict(self, store: StateStore) -> None:
        await store.register_batch(registration())
        await store.record_outcomes([rec("spellcheck", "e1", F)])
        [result] = await store.record_outcomes([rec("spellcheck", "e1", S)])
        error = result.error
        assert isinstance(error, ConflictingOutcome)
        assert (error.batch_id, error.step, error.essay_id) == ("b1", "spellcheck", "e1")
        assert (error.recorded, error.attempted) == (F, S)
        assert not result.newly_recorded
        state = (await store.batch_state("b1")).step("spellcheck")
        assert (state.succeeded, state.failed) == (0, 1)

    async def test_refused_records_do_not_fail_the_others(self, store: StateStore) -> None:
        await store.register_batch(registration())
        results = await store.record_outcomes(
            [
                rec("spellcheck", "e1"),
                rec("no_such_step", "e1"),
                rec("spellcheck", "stranger"),
                rec("nlp", "e1"),  # nlp is still WAITING
                rec("spellcheck", "e1", batch="other"),
                rec("spellcheck", "e2", F),
            ]
        )
        assert results[0].record == rec("spellcheck", "e1")
        assert results[0].newly_recorded
        assert isinstance(results[1].error, UnknownStep)
        assert results[1].error.step == "no_such_step"
        assert isinstance(results[2].error, EssayNotExpected)
        assert results[2].error.essay_id == "stranger"
        assert isinstance(results[3].error, EssayNotExpected)
        assert results[3].error.step == "nlp"
        assert isinstance(results[4].error, UnknownBatch)
        assert results[5].newly_recorded
        state = (await store.batch_state("b1")).step("spellcheck")
        assert (state.succeeded, state.failed, state.status) == (1, 1, StepStatus.IN_PROGRESS)

    async def test_repeats_inside_one_call(self, store: StateStore) -> None:
        await store.register_batch(registration())
        results = await store.record_outcomes(
            [rec("spellcheck", "e1"), rec("spellcheck", "e1"), rec("spellcheck", "e1", F)]
        )
        assert [r.newly_recorded for r in results] == [True, False, False]
        assert results[1].ok
        assert isinstance(results[2].error, ConflictingOutcome)
        assert results[2].error.recorded is S

    async def test_the_last_outcome_completes_the_step_once(self, store: StateStore) -> None:
        await store.register_batch(registration())
        results = await store.record_outcomes(
            [rec("spellcheck", e) for e in ESSAYS] + [rec("spellcheck", "e4")]
        )
        assert [r.completed_step for r in results] == [False, False, False, True, False]
        assert results[3].state == StepState("spellcheck", 4, 0, 4, StepStatus.SATISFIED)
        [replay] = await store.record_outcomes([rec("spellcheck", "e4")])
        assert replay.ok
        assert not replay.completed_step
        assert not replay.newly_recorded
        state = await store.batch_state("b1")
        assert state.step("nlp") == StepState("nlp", 0, 0, 4, StepStatus.NOT_STARTED)
        assert state.step("cj_assessment") == StepState(
            "cj_assessment", 0, 0, 4, StepStatus.NOT_STARTED
        )

    async def test_failed_essays_are_not_sent_downstream(self, store: StateStore) -> None:
        await store.register_batch(registration())
        # spellcheck needs every essay (ratio 1.0): one failure leaves it unsatisfied
        await record_all(store, "spellcheck", {"e1": S, "e2": S, "e3": S, "e4": F})
        state = await store.batch_state("b1")
        assert state.step("spellcheck").status is StepStatus.UNSATISFIED
        for step in ("nlp", "cj_assessment", "ai_feedback"):
            assert state.step(step) == StepState(step, 0, 0, 0, StepStatus.BLOCKED)
        [blocked] = await store.record_outcomes([rec("nlp", "e1")])
        assert isinstance(blocked.error, EssayNotExpected)

    async def test_a_dependant_expects_what_succeeded_in_every_dependency(
        self, store: StateStore
    ) -> None:
        await store.register_batch(registration())
        await record_all(store, "spellcheck", dict.fromkeys(ESSAYS, S))
        await record_all(store, "nlp", {"e1": S, "e2": S, "e3": S, "e4": S})
        # cj_assessment needs half: e3 and e4 fail, still satisfied
        results = await store.record_outcomes(
            [
                rec("cj_assessment", "e1"),
                rec("cj_assessment", "e2", F),
                rec("cj_assessment", "e3", F),
            ]
        )
        assert not any(r.completed_step for r in results)
        [done] = await store.record_outcomes([rec("cj_assessment", "e4")])
        assert done.completed_step
        assert done.state == StepState("cj_assessment", 2, 2, 4, StepStatus.SATISFIED)
        state = await store.batch_state("b1")
        assert state.step("ai_feedback") == StepState(
            "ai_feedback", 0, 0, 2, StepStatus.NOT_STARTED
        )
        [outsider] = await store.record_outcomes([rec("ai_feedback", "e2")])
        assert isinstance(outsider.error, EssayNotExpected)
        results = await store.record_outcomes([rec("ai_feedback", "e1"), rec("ai_feedback", "e4")])
        assert [r.completed_step for r in results] == [False, True]
        assert (await store.batch_state("b1")).step("ai_feedback").status is StepStatus.SATISFIED

    async def test_below_the_ratio_blocks_the_dependants(self, store: StateStore) -> None:
        await store.register_batch(registration())
        await record_all(store, "spellcheck", dict.fromkeys(ESSAYS, S))
        await record_all(store, "nlp", dict.fromkeys(ESSAYS, S))
        await record_all(store, "cj_assessment", {"e1": S, "e2": F, "e3": F, "e4": F})
        state = await store.batch_state("b1")
        assert state.step("cj_assessment") == StepState(
            "cj_assessment", 1, 3, 4, StepStatus.UNSATISFIED
        )
        assert state.step("ai_feedback").status is StepStatus.BLOCKED

    async def test_a_dependant_expecting_nothing_completes_with_its_dependency(
        self, store: StateStore
    ) -> None:
        await store.register_batch(registration())
        results = await store.record_outcomes([rec("triage", e, F) for e in ESSAYS])
        last = results[-1]
        assert last.completed_step
        assert last.state == StepState("triage", 0, 4, 4, StepStatus.SATISFIED)
        assert last.cascaded == (StepState("review", 0, 0, 0, StepStatus.UNSATISFIED),)
        assert not any(r.cascaded for r in results[:-1])
        state = await store.batch_state("b1")
        assert state.step("review") == StepState("review", 0, 0, 0, StepStatus.UNSATISFIED)
        [late] = await store.record_outcomes([rec("review", "e1")])
        assert isinstance(late.error, EssayNotExpected)

    async def test_batches_are_independent(self, store: StateStore) -> None:
        await store.register_batch(registration("b1"))
        await store.register_batch(registration("b2", ("e1", "x")))
        results = await store.record_outcomes(
            [rec("spellcheck", "e1", batch="b1"), rec("spellcheck", "e1", F, batch="b2")]
        )
        assert all(r.newly_recorded for r in results)
        assert (await store.batch_state("b1")).step("spellcheck").succeeded == 1
        assert (await store.batch_state("b2")).step("spellcheck").failed == 1

    async def test_close_is_idempotent(self, store: StateStore) -> None:
        await store.close()
        await store.close()


class RunControlContract:
    """Attempts, timeouts, per-essay results and the flag gate, on every ``StateStore``."""

    async def test_a_step_whose_flag_the_batch_lacks_refuses_outcomes(
        self, store: StateStore
    ) -> None:
        await store.register_batch(registration())
        [refused] = await store.record_outcomes([rec("scoring", "e1")])
        assert isinstance(refused.error, StepNotAllowed)
        assert refused.error.missing_flags == ("prompt_attached",)
        assert (await store.batch_state("b1")).step("scoring").succeeded == 0
        await store.register_batch(registration("b1", ESSAYS, "prompt_attached"))
        [counted] = await store.record_outcomes([rec("scoring", "e1")])
        assert counted.ok
        assert counted.newly_recorded

    async def test_a_retry_reopens_only_failures_and_its_attempt_supersedes_earlier_ones(
        self, store: StateStore
    ) -> None:
        await store.register_batch(registration())
        first = {"e1": S, "e2": F, "e3": F, "e4": S}
        results = await store.record_outcomes(
            [rec("spellcheck", e, o, run_id="r1") for e, o in first.items()]
        )
        assert results[-1].completed_step
        [reopened] = await store.reopen("b1", "r1", 2, ["spellcheck"])
        assert reopened.essay_ids == ("e2", "e3")
        assert reopened.state == StepState("spellcheck", 2, 0, 4, StepStatus.IN_PROGRESS)
        [again] = await store.reopen("b1", "r1", 2, ["spellcheck"])  # a repeat: the same essays
        assert again.essay_ids == ("e2", "e3")
        stale = await store.record_outcomes(
            [rec("spellcheck", "e2", S, run_id="r1"), rec("spellcheck", "e3", F, run_id="r1")]
        )
        assert [r.verdict for r in stale] == [Verdict.SUPERSEDED, Verdict.SUPERSEDED]
        assert (await store.batch_state("b1")).step("spellcheck").failed == 0
        retried = await store.record_outcomes(
            [
                rec("spellcheck", "e2", S, run_id="r1", attempt=2),
                rec("spellcheck", "e3", F, run_id="r1", attempt=2),
            ]
        )
        assert [r.verdict for r in retried] == [Verdict.RECORDED, Verdict.RECORDED]
        assert retried[-1].completed_step
        state = (await store.batch_state("b1")).step("spellcheck")
        assert state == StepState("spellcheck", 3, 1, 4, StepStatus.UNSATISFIED)
        [repeat] = await store.record_outcomes([rec("spellcheck", "e3", F, "b1", "r1", 2)])
        assert repeat.verdict is Verdict.DUPLICATE
        [late] = await store.record_outcomes([rec("spellcheck", "e3", S, run_id="r1")])
        assert late.verdict is Verdict.SUPERSEDED
        results_now = await store.essay_results("b1", ["e2", "e3"])
        assert [(r.outcome, r.run_id, r.attempt) for r in results_now["e2"]] == [(S, "r1", 2)]
        assert [(r.outcome, r.error_code) for r in results_now["e3"]] == [(F, "WORKER_FAILED")]

    async def test_reopening_a_step_of_another_run_does_not_supersede_it(
        self, store: StateStore
    ) -> None:
        await store.register_batch(registration())
        await store.record_outcomes([rec("spellcheck", "e1", F, run_id="r1")])
        [reopened] = await store.reopen("b1", "r1", 2, ["spellcheck"])
        assert reopened.essay_ids == ESSAYS  # e1 failed, the others never reported
        [other] = await store.record_outcomes([rec("spellcheck", "e2", S, run_id="r2")])
        assert other.verdict is Verdict.RECORDED  # another run's attempt 1 is not superseded

    async def test_a_retry_success_makes_a_ready_dependant_expect_the_essay(
        self, store: StateStore
    ) -> None:
        await store.register_batch(registration())
        await record_all(store, "triage", {"e1": S, "e2": F, "e3": F, "e4": F})
        await record_all(store, "review", {"e1": S})
        assert (await store.batch_state("b1")).step("review").status is StepStatus.SATISFIED
        [reopened] = await store.reopen("b1", "r1", 2, ["triage"])
        assert reopened.essay_ids == ("e2", "e3", "e4")
        [success] = await store.record_outcomes([rec("triage", "e2", S, "b1", "r1", 2)])
        assert success.ok
        review = (await store.batch_state("b1")).step("review")
        assert review == StepState("review", 1, 0, 2, StepStatus.IN_PROGRESS)
        [done] = await store.record_outcomes([rec("review", "e2", S, "b1", "r1", 2)])
        assert done.completed_step
        assert done.state == StepState("review", 2, 0, 2, StepStatus.SATISFIED)

    async def test_a_timeout_fails_the_missing_essays_and_late_outcomes_change_nothing(
        self, store: StateStore
    ) -> None:
        await store.register_batch(registration())
        await store.record_outcomes([rec("spellcheck", "e1", run_id="r1")])
        await store.record_outcomes([rec("spellcheck", "e2", F, run_id="r1")])
        expired = await store.expire("b1", "spellcheck", "r1", 1)
        assert expired.essay_ids == ("e3", "e4")
        assert expired.state == StepState("spellcheck", 1, 3, 4, StepStatus.UNSATISFIED, 2)
        assert (await store.batch_state("b1")).step("spellcheck").timed_out == 2
        [late] = await store.record_outcomes([rec("spellcheck", "e3", S, run_id="r1")])
        assert late.verdict is Verdict.LATE
        assert (await store.expire("b1", "spellcheck", "r1", 1)).essay_ids == ()
        [e3] = (await store.essay_results("b1", ["e3"]))["e3"]
        assert (e3.outcome, e3.error_code, e3.run_id, e3.attempt) == (T, TIMED_OUT_CODE, "r1", 1)
        [reopened] = await store.reopen("b1", "r1", 2, ["spellcheck"])
        assert reopened.essay_ids == ("e2", "e3", "e4")
        assert reopened.state == StepState("spellcheck", 1, 0, 4, StepStatus.IN_PROGRESS, 0)

    async def test_a_timeout_leaves_essays_open_at_a_later_attempt(self, store: StateStore) -> None:
        await store.register_batch(registration())
        await store.record_outcomes([rec("spellcheck", e, F, run_id="r1") for e in ESSAYS[:2]])
        await store.reopen("b1", "r1", 2, ["spellcheck"])
        assert (await store.expire("b1", "spellcheck", "r1", 1)).essay_ids == ()
        assert (await store.expire("b1", "spellcheck", "r1", 2)).essay_ids == ESSAYS

    async def test_essay_results_in_step_order_with_outputs(self, store: StateStore) -> None:
        await store.register_batch(registration())
        await store.record_outcomes(
            [rec("triage", "e1", F), rec("spellcheck", "e1", S, output="t1")]
        )
        found = await store.essay_results("b1", ["e1", "e2", "stranger"])
        assert [(r.step, r.outcome, r.output_storage_id) for r in found["e1"]] == [
            ("spellcheck", S, "t1"),
            ("triage", F, ""),
        ]
        assert found["e1"][0].recorded_at is not None
        assert found["e2"] == []
        assert found["stranger"] == []
        with pytest.raises(UnknownBatch):
            await store.essay_results("nope", ["e1"])

    async def test_unknown_batch_or_step_changes_nothing(self, store: StateStore) -> None:
        await store.register_batch(registration())
        with pytest.raises(UnknownBatch):
            await store.reopen("nope", "r1", 2, ["spellcheck"])
        with pytest.raises(UnknownStep):
            await store.reopen("b1", "r1", 2, ["spellcheck", "nope"])
        with pytest.raises(UnknownStep):
            await store.expire("b1", "nope", "r1", 1)
        with pytest.raises(UnknownBatch):
            await store.expire("nope", "spellcheck", "r1", 1)
        assert (await store.batch_state("b1")).step("spellcheck").status is StepStatus.NOT_STARTED
