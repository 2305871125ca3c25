"""PostgreSQL specifics: the outbox, the SQL protobuf encoder, migrations, outages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from conductor_server.domain.model import BatchRegistration, Outcome, OutcomeRecord
from conductor_server.state import (
    PostgresStateStore,
    StateBackendUnavailable,
    completion_event_id,
)
from generated.huleedu.events.v1 import events_pb2
from mesh import envelope
from mesh.topics import EventKind
from tests.conftest import Backends
from tests.integration.test_state_redis import free_port
from tests.unit.test_state_contract import ESSAYS, STEPS, rec

F = Outcome.FAILED
S = Outcome.SUCCEEDED


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStateStore]:
    async with await PostgresStateStore.connect(database_url, STEPS) as store:
        await store.migrate()
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
        ),
        "triage": events_pb2.BatchStepCompleted(
            batch_id="b1", step="triage", failed=4, total=4, satisfied=True
        ),
        # review expects the essays that passed triage: none, so it completes unsatisfied.
        "review": events_pb2.BatchStepCompleted(batch_id="b1", step="review"),
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
        # The SQL-appended payload is byte for byte what protobuf itself would write.
        assert envelope.encode(event) == row["payload"]


# Lengths on both sides of each varint size (1 byte below 128, 2 below 16,384, then 3).
ESSAY_REFS = [
    ("e1", "out-1"),
    ("é-2", ""),
    ("e3", "x" * 300),
    ("e" * 127, "y" * 125),
    ("é" * 64, "z" * 16_383),
    ("e6", "w" * 20_000),
]


@pytest.mark.parametrize(
    ("batch_id", "step", "counts"),
    [
        ("b", "s", (0, 0, 0)),
        ("b", "s", (127, 1, 128)),
        ("å/批次-é", "nlp", (300, 16_384, 16_684)),
        ("x" * 200, "y" * 130, (2**31 - 2, 1, 2**31 - 1)),
    ],
)
async def test_the_sql_payload_encoder_matches_protobuf(
    store: PostgresStateStore,
    database_url: str,
    batch_id: str,
    step: str,
    counts: tuple[int, int, int],
) -> None:
    succeeded, failed, total = counts
    conn = await asyncpg.connect(database_url)
    try:
        for satisfied in (False, True):
            encoded = await conn.fetchval(
                "SELECT conductor_batch_step_completed_pb($1, $2, $3, $4, $5, $6, "
                "conductor_essay_refs_pb($7, $8))",
                batch_id,
                step,
                succeeded,
                failed,
                total,
                satisfied,
                [e for e, _ in ESSAY_REFS] + ["did-not-succeed"],
                [o for _, o in ESSAY_REFS] + [None],  # NULL: left out of the list
            )
            wanted = events_pb2.EventEnvelope(
                batch_step_completed=events_pb2.BatchStepCompleted(
                    batch_id=batch_id,
                    step=step,
                    succeeded=succeeded,
                    failed=failed,
                    total=total,
                    satisfied=satisfied,
                    succeeded_essays=[
                        events_pb2.EssayRef(essay_id=e, text_storage_id=o) for e, o in ESSAY_REFS
                    ],
                )
            )
            assert encoded == wanted.SerializeToString()
    finally:
        await conn.close()


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
    [payload] = await fetch(
        database_url,
        "SELECT payload FROM event_outbox WHERE event_id = $1",
        completion_event_id("b2", "spellcheck"),
    )
    event = envelope.decode(payload["payload"], accept={"batch_step_completed"})
    assert [
        (r.essay_id, r.text_storage_id) for r in event.batch_step_completed.succeeded_essays
    ] == [
        ("e3", "text-e3"),
        ("e1", "text-e1"),
        ("e2", "text-e2"),
    ]


async def test_values_holding_the_separator_are_stored_as_given(
    store: PostgresStateStore, database_url: str
) -> None:
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
    await store.migrate()
    rows = await fetch(database_url, "SELECT source, version, name FROM schema_migrations")
    assert sorted(tuple(r) for r in rows) == [
        ("conductor", 1, "pipeline_state"),
        ("conductor", 2, "succeeded_essays_by_probe"),
        ("conductor", 3, "essay_list_without_function_calls"),
        ("conductor", 4, "record_outcomes_packed"),
        ("mesh", 1, "event_outbox"),
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


async def test_an_unreachable_postgres_is_a_transient_error() -> None:
    with pytest.raises(StateBackendUnavailable) as caught:
        await PostgresStateStore.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/x", STEPS)
    assert caught.value.retriable
    assert caught.value.backend == "postgresql"


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
