"""The state store contract on the in-memory store, and what it publishes on its bus."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conductor_server.events import completion_event_id
from conductor_server.ports import StateStore
from conductor_server.store.memory import MemoryStateStore
from mesh.events import envelope
from mesh.events.memory import MemoryBus
from mesh.events.topics import EventKind, topic_name
from tests.support.state_contract import (
    ESSAYS,
    STEPS,
    RunControlContract,
    StateContract,
    rec,
    registration,
)


class TestMemoryStateStore(StateContract, RunControlContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[StateStore]:
        async with MemoryStateStore(STEPS) as store:
            yield store


async def test_a_completed_step_is_published_once_with_its_succeeded_essays() -> None:
    bus = MemoryBus()
    store = MemoryStateStore(STEPS, events_out=bus)
    await store.register_batch(registration())
    outcomes = [rec("spellcheck", e) for e in reversed(ESSAYS)]
    outcomes[0] = outcomes[0]._replace(output_storage_id="corrected-e4")
    await store.record_outcomes(outcomes)
    await store.record_outcomes(outcomes)  # a redelivery publishes nothing more
    await store.record_outcomes([rec("triage", e) for e in ESSAYS])
    published = bus.records(topic_name(EventKind.BATCH_STEP_COMPLETED))
    events = [envelope.decode(r.value).batch_step_completed for r in published]
    assert [(e.step, e.succeeded, e.total, e.satisfied) for e in events] == [
        ("spellcheck", 4, 4, True),
        ("triage", 4, 4, True),
    ]
    refs = [(r.essay_id, r.text_storage_id) for r in events[0].succeeded_essays]
    assert refs == [("e1", ""), ("e2", ""), ("e3", ""), ("e4", "corrected-e4")]  # batch order
    ids = [envelope.decode(r.value).event_id for r in published]
    assert ids == [completion_event_id("b1", "spellcheck"), completion_event_id("b1", "triage")]


async def test_a_completion_carries_outputs_as_texts_only_for_a_step_that_produces_text() -> None:
    bus = MemoryBus()
    store = MemoryStateStore(STEPS, events_out=bus)
    await store.register_batch(registration())
    for step in ("spellcheck", "nlp"):  # spellcheck produces text, nlp a result
        outcomes = [rec(step, e) for e in ESSAYS]
        await store.record_outcomes(
            [r._replace(output_storage_id=f"{step}-{r.essay_id}") for r in outcomes]
        )
    published = bus.records(topic_name(EventKind.BATCH_STEP_COMPLETED))
    texts = {
        event.step: [(r.essay_id, r.text_storage_id) for r in event.succeeded_essays]
        for event in (envelope.decode(r.value).batch_step_completed for r in published)
    }
    assert texts == {
        "spellcheck": [(e, f"spellcheck-{e}") for e in ESSAYS],
        "nlp": [(e, "") for e in ESSAYS],
    }
