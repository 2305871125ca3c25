"""PostgreSQL specifics: the outbox, batch order, odd values, migrations, a table that gained a
step, concurrency, outages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bench.harness.ports import free_port
from conductor_server.domain.model import BatchRegistration, Outcome, OutcomeRecord
from conductor_server.events import completion_event_id
from conductor_server.store.errors import StateBackendUnavailable
from conductor_server.store.postgres import PostgresStateStore
from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope
from mesh.events.topics import EventKind
from mesh.postgres.pool import postgres_pool
from mesh.runtime import StartupError
from tests.conftest import Backends
from tests.support.state_contract import ESSAYS, STEPS, rec
from tests.support.stores import postgres_store

F = Outcome.FAILED
S = Outcome.SUCCEEDED


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStateStore]:
    async with postgres_store(database_url) as store:
        yield store


async def fetch(database_url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query, *args)
        return rows
    finally:
        await conn.close()


async def test_each_completed_step_writes_one_outbox_event(
    store: PostgresStateStore, database_url: str
) -> None:
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    records = [rec("spellcheck", e) for e in ESSAYS] + [rec("triage", e, F) for e in ESSAYS]
    await store.record_outcomes(records)
    await store.record_outcomes(records)  # redelivered: nothing new

    rows = await fetch(database_url, "SELECT * FROM event_outbox ORDER BY id")
    expected = {
        "spellcheck": events_pb2.BatchStepCompleted(
            batch_id="b1",
            step="spellcheck",
            succeeded=4,
            total=4,
            satisfied=True,
            succeeded_essays=[events_pb2.EssayRef(essay_id=e) for e in ESSAYS],
            attempt=1,
        ),
        "triage": events_pb2.BatchStepCompleted(
            batch_id="b1", step="triage", failed=4, total=4, satisfied=True, attempt=1
        ),
        # review expects the essays that passed triage: none, so it completes unsatisfied.
        "review": events_pb2.BatchStepCompleted(batch_id="b1", step="review", attempt=1),
    }
    assert [r["event_id"] for r in rows] == [completion_event_id("b1", s) for s in expected]
    for row, (step, payload) in zip(rows, expected.items(), strict=True):
        assert row["topic_kind"] == EventKind.BATCH_STEP_COMPLETED.value
        assert row["message_key"] == b"b1"
        assert row["published_at"] is None
        event = envelope.decode(row["payload"], accept={"batch_step_completed"})
        assert event.batch_step_completed == payload, step
        assert event.event_id == completion_event_id("b1", step)
        assert event.source_service == "huleedu-pipeline-conductor"
        assert event.schema_version == 1
        assert event.correlation_id
        headers = json.loads(row["headers"])
        assert headers["event_id"] == event.event_id
        assert headers["event_type"] == "huleedu.events.v1.BatchStepCompleted"


async def test_a_completion_lists_the_succeeded_essays_in_batch_order_with_their_output(
    store: PostgresStateStore, database_url: str
) -> None:
    order = ("e3", "e1", "e4", "e2")  # registration order, not sorted
    await store.register_batch(BatchRegistration("b2", order))
    records = [
        OutcomeRecord("b2", "spellcheck", essay, outcome, f"text-{essay}", f"ev-{essay}")
        for essay, outcome in [("e2", S), ("e4", F), ("e1", S), ("e3", S)]
    ]
    await store.record_outcomes(records)
    assert await completed_essays(database_url, "b2", "spellcheck") == [
        ("e3", "text-e3"),
        ("e1", "text-e1"),
        ("e2", "text-e2"),
    ]
    # triage's outputs are results, not texts: its completion lists the essays without them
    triage = [OutcomeRecord("b2", "triage", e, S, f"triage-{e}", f"t-{e}") for e in order]
    await store.record_outcomes(triage)
    assert await completed_essays(database_url, "b2", "triage") == [(e, "") for e in order]


async def completed_essays(database_url: str, batch_id: str, step: str) -> list[tuple[str, str]]:
    """(essay id, text storage id) of each essay of the step's completion in the outbox."""
    [payload] = await fetch(
        database_url,
        "SELECT payload FROM event_outbox WHERE event_id = $1",
        completion_event_id(batch_id, step),
    )
    event = envelope.decode(payload["payload"], accept={"batch_step_completed"})
    return [(r.essay_id, r.text_storage_id) for r in event.batch_step_completed.succeeded_essays]


async def test_odd_values_are_stored_as_given(store: PostgresStateStore, database_url: str) -> None:
    # The store is a library: it takes any text, not only the ids the services validated.
    odd = ("e\x1fa", "e b", "", "e!")
    await store.register_batch(BatchRegistration("b\x1f3", odd))
    records = [
        OutcomeRecord("b\x1f3", "spellcheck", essay, S, f"out\x1f{n}", f"ev {n}\x1f")
        for n, essay in enumerate(odd)
    ]
    results = await store.record_outcomes(records)
    assert [r.newly_recorded for r in results] == [True] * 4
    assert [r.completed_step for r in results] == [False, False, False, True]
    rows = await fetch(
        database_url,
        "SELECT essay_id, output_storage_id, event_id FROM essay_step_outcomes"
        " WHERE batch_id = $1 ORDER BY event_id",
        "b\x1f3",
    )
    assert [tuple(row) for row in rows] == [
        (essay, f"out\x1f{n}", f"ev {n}\x1f") for n, essay in enumerate(odd)
    ]


async def test_migrations_are_applied_once_and_recorded(
    store: PostgresStateStore, database_url: str
) -> None:
    async with postgres_store(database_url):  # a second start-up applies nothing
        pass
    rows = await fetch(database_url, "SELECT source, version, name FROM schema_migrations")
    assert sorted(tuple(r) for r in rows) == [
        ("conductor", 1, "pipeline_state"),
        ("conductor", 2, "attempts_and_timeouts"),
        ("conductor", 3, "tally_stamps"),
        ("conductor", 4, "stamp_moves_and_truncates"),
        ("mesh", 1, "outbox_namespace_and_dead_letters"),
        ("mesh", 2, "api_keys"),
        ("mesh", 3, "fast_toast_compression"),
        ("mesh", 4, "stamps"),
    ]


async def test_the_state_table_mirrors_the_statuses(
    store: PostgresStateStore, database_url: str
) -> None:
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    await store.record_outcomes([rec("spellcheck", e) for e in ESSAYS[:3]])
    await store.record_outcomes([rec("spellcheck", "e4", F), rec("triage", "e1")])
    state = await store.batch_state("b1")
    rows = await fetch(
        database_url, "SELECT step, succeeded, failed, total, status FROM processing_pipeline_state"
    )
    table = {r["step"]: (r["succeeded"], r["failed"], r["total"] or 0, r["status"]) for r in rows}
    assert table == {s.step: (s.succeeded, s.failed, s.total, s.status.value) for s in state.steps}
    assert table["ai_feedback"][3] == "blocked"


async def test_concurrent_registrations_create_the_batch_once(store: PostgresStateStore) -> None:
    created = await asyncio.gather(
        *(store.register_batch(BatchRegistration("b1", ESSAYS)) for _ in range(10))
    )
    assert sorted(created) == [False] * 9 + [True]


async def test_an_unreachable_postgres_fails_start_up_naming_it() -> None:
    with pytest.raises(StartupError, match="PostgreSQL unreachable at postgresql://u:\\*\\*\\*@"):
        async with postgres_pool(f"postgresql://u:secret@127.0.0.1:{free_port()}/x", 2, {}):
            pass


async def test_a_step_the_table_gained_after_registration_is_counted_from_the_outcomes(
    database_url: str,
) -> None:
    """A restart with a new pipeline file: batches registered before get the new step's row
    from a replay of their outcomes, the first time a write touches them."""
    older = {name: STEPS[name] for name in ("spellcheck", "triage")}
    async with postgres_store(database_url, older) as before:
        await before.register_batch(BatchRegistration("b1", ESSAYS))
        await before.record_outcomes([rec("spellcheck", e) for e in ESSAYS[:3]])
        await before.record_outcomes([rec("spellcheck", "e4", F)])
    async with postgres_store(database_url) as after:
        [result] = await after.record_outcomes([rec("triage", "e1")])
        assert result.newly_recorded
        state = await after.batch_state("b1")
    assert [(s.step, s.status.value) for s in state.steps] == [
        ("spellcheck", "unsatisfied"),
        ("nlp", "blocked"),
        ("cj_assessment", "blocked"),
        ("ai_feedback", "blocked"),
        ("triage", "in_progress"),
        ("review", "waiting"),
        ("scoring", "not_started"),
    ]


async def test_a_killed_postgres_loses_nothing(
    backends: Backends, store: PostgresStateStore
) -> None:
    await store.register_batch(BatchRegistration("b1", ESSAYS))
    await store.record_outcomes([rec("spellcheck", e) for e in ESSAYS[:2]])
    backends.kill("postgres")
    with pytest.raises(StateBackendUnavailable):
        await store.record_outcomes([rec("spellcheck", "e3")])
    backends.start("postgres")
    for _ in range(5):  # the pool drops its dead connections as it meets them
        try:
            results = await store.record_outcomes([rec("spellcheck", e) for e in ESSAYS])
            break
        except StateBackendUnavailable:
            continue
    else:
        raise AssertionError("postgres did not come back")
    assert [r.newly_recorded for r in results] == [False, False, True, True]
    assert (await store.batch_state("b1")).step("spellcheck").succeeded == 4
