"""ListBatches' filters select the same batches, in the same order and pages, from PostgreSQL as
from the in-memory store (whose selection is ``BatchFilter.matches`` itself), on random batches,
runs and queries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch_server.domain.model import BatchMetadata, RunStatus
from batch_server.domain.paging import BatchFilter, PageCursor
from batch_server.ports import BatchStore
from batch_server.store.memory import MemoryBatchStore
from batch_server.store.postgres import MIGRATIONS, PostgresBatchStore
from mesh.events.memory import MemoryBus
from mesh.postgres.pool import postgres_pool
from tests.support.batch_store_contract import add, add_run, at, batch

MINUTES = st.integers(0, 6)  # few distinct times: ties of created_at are common
LABELS = st.dictionaries(st.sampled_from(["term", "room"]), st.sampled_from(["a", "b"]))
STATUSES = st.sampled_from(RunStatus)
TERMINAL = st.sampled_from([s for s in RunStatus if s.terminal])


@dataclass(frozen=True)
class Listed:
    """A batch to create: when, its labels, and its runs' statuses, oldest first."""

    minute: int
    labels: dict[str, str]
    runs: tuple[RunStatus, ...]


@st.composite
def listed(draw: st.DrawFn) -> Listed:
    older = draw(st.lists(TERMINAL, max_size=2))  # at most the newest run is active
    newest = draw(st.lists(STATUSES, max_size=1))
    return Listed(draw(MINUTES), draw(LABELS), (*older, *newest))


filters = st.builds(
    BatchFilter,
    latest_run_statuses=st.frozensets(st.none() | STATUSES, max_size=3),
    labels=LABELS,
    created_after=st.none() | MINUTES.map(at),
    created_before=st.none() | MINUTES.map(at),
)
cursors = st.none() | st.builds(
    PageCursor, MINUTES.map(at), st.sampled_from(["b00", "b03", "b05", "b09", "zz"])
)
queries = st.tuples(st.integers(1, 12), cursors, filters)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Any]:
    async with postgres_pool(database_url, 4, MIGRATIONS) as created:
        yield created


async def load(store: BatchStore, batches: list[Listed]) -> None:
    for n, one in enumerate(batches):
        batch_id = f"b{n:02}"
        await add(store, batch(batch_id, BatchMetadata(labels=one.labels), at(one.minute)))
        for r, status in enumerate(one.runs):
            await add_run(store, batch_id, f"{batch_id}-r{r}", status, at(10 + r))


@given(
    batches=st.lists(listed(), max_size=12),
    asked=st.lists(queries, min_size=1, max_size=6),
)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_postgresql_lists_what_the_filter_selects_in_memory(
    pool: Any, batches: list[Listed], asked: list[tuple[int, PageCursor | None, BatchFilter]]
) -> None:
    await pool.execute("TRUNCATE batches CASCADE")
    memory, postgres = MemoryBatchStore(MemoryBus()), PostgresBatchStore(pool)
    await load(memory, batches)
    await load(postgres, batches)
    for limit, after, wanted in asked:
        expected = await memory.list_batches(limit, after, wanted)
        assert await postgres.list_batches(limit, after, wanted) == expected, (limit, after)
