"""The state store contract: every implementation must pass ``StateContract``.

``tests/unit/test_state_memory.py`` runs it against the in-memory store,
``tests/integration/test_state_contract.py`` against PostgreSQL and the composed store.
"""

from __future__ import annotations

import pytest

from conductor_server.domain.model import (
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
    UnknownBatch,
    UnknownStep,
)

S, F = Outcome.SUCCEEDED, Outcome.FAILED

# spellcheck (produces text) -> nlp, cj_assessment (ratio 0.5) -> ai_feedback; triage (ratio 0)
# -> review
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
    )
}
ESSAYS = ("e1", "e2", "e3", "e4")


def rec(step: str, essay: str, outcome: Outcome = S, batch: str = "b1") -> OutcomeRecord:
    return OutcomeRecord(batch, step, essay, outcome, event_id=f"{batch}/{step}/{essay}")


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
