"""The real mode's state store: PostgreSQL decides and keeps, Redis serves the reads.

- **Writes** (registrations, outcomes) go to PostgreSQL, which applies the counting rule and
  commits the counts with their completion events. The resulting state of every batch the write
  touched is then merged into Redis (``RedisMirror``), even when nothing changed, so a repeated
  write (a redelivery after a crash between the two) brings Redis up to date.
- **Reads** come from Redis; a batch Redis does not have is read from PostgreSQL and merged.
  Per-essay results (``essay_results``) are not mirrored: they are read from PostgreSQL.
- **Retries and timeouts** (``reopen``, ``expire``) are writes like the others.
- **Redis down** does not stop the product: writes still count in PostgreSQL and every read
  falls back to it. A batch whose merge failed is stale: its reads go to PostgreSQL in this
  process, and it is written to PostgreSQL's mirror backlog (``conductor_mirror_backlog``), from
  which it is merged again once Redis answers (seen by a merge that succeeds, or at start-up),
  whichever conductor replica sees Redis back first, even after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from conductor_server.domain.model import BatchRegistration, EssayStepResult, OutcomeRecord
from conductor_server.ports import BatchState, Expired, RecordResult, Reopened
from conductor_server.store.errors import StateBackendUnavailable, UnknownBatch
from conductor_server.store.postgres import PostgresStateStore
from conductor_server.store.redis_mirror import RedisMirror
from mesh.resource import AsyncResource

log = logging.getLogger(__name__)

CATCH_UP_CHUNK = 100  # backlog batches merged per round trip


class ComposedStateStore(AsyncResource):
    """PostgreSQL, mirrored into Redis."""

    def __init__(self, durable: PostgresStateStore, mirror: RedisMirror) -> None:
        self._durable = durable
        self._mirror = mirror
        self._stale: set[str] = set()  # batches whose latest merge failed, in this process
        self._redis_down = False
        self._catching_up: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Merge whatever the backlog holds (a previous process may have left some)."""
        self._catch_up_soon()

    async def close(self) -> None:
        """Stop catching up; both stores belong to the caller."""
        if self._catching_up is not None:
            self._catching_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._catching_up

    async def register_batch(self, registration: BatchRegistration) -> bool:
        created, state = await self._durable.register(registration)
        await self._merge([state])
        return created

    async def record_outcomes(self, records: Sequence[OutcomeRecord]) -> list[RecordResult]:
        recorded = await self._durable.record(records)
        await self._merge(recorded.states)
        return recorded.results

    async def reopen(
        self, batch_id: str, run_id: str, attempt: int, steps: Sequence[str]
    ) -> list[Reopened]:
        reopened, state = await self._durable.reopen_with_state(batch_id, run_id, attempt, steps)
        await self._merge([state])
        return reopened

    async def expire(self, batch_id: str, step: str, run_id: str, attempt: int) -> Expired:
        expired, state = await self._durable.expire_with_state(batch_id, step, run_id, attempt)
        await self._merge([state])
        return expired

    async def essay_results(
        self, batch_id: str, essay_ids: Sequence[str]
    ) -> dict[str, list[EssayStepResult]]:
        """Read from PostgreSQL: per-essay results are not mirrored."""
        return await self._durable.essay_results(batch_id, essay_ids)

    async def batch_state(self, batch_id: str) -> BatchState:
        stale = batch_id in self._stale
        if not stale:
            try:
                mirrored = await self._mirror.read(batch_id)
            except StateBackendUnavailable as exc:
                self._redis_failed(exc)
                return await self._durable.batch_state(batch_id)
            if mirrored is not None:
                return mirrored
        state = await self._durable.batch_state(batch_id)
        if not stale:
            log.info("redis lost batch %s; merged it from postgresql", batch_id)
        await self._merge([state])
        return state

    async def _merge(self, states: Sequence[BatchState]) -> None:
        ids = [state.batch_id for state in states]
        try:
            await self._mirror.merge(states)
        except StateBackendUnavailable as exc:
            self._stale.update(ids)
            self._redis_failed(exc)
            try:
                await self._durable.remember_stale(ids)
            except StateBackendUnavailable:
                log.warning("could not note %d batch(es) for a later merge", len(ids))
            return
        self._stale.difference_update(ids)
        if self._redis_down:
            self._redis_down = False
            log.info("redis is back; merging the batches it missed")
            self._catch_up_soon()

    def _redis_failed(self, exc: StateBackendUnavailable) -> None:
        if not self._redis_down:
            self._redis_down = True
            log.warning("redis unavailable (%s); counting and reading with postgresql", exc)

    def _catch_up_soon(self) -> None:
        if self._catching_up is None or self._catching_up.done():
            self._catching_up = asyncio.create_task(self._catch_up(), name="mirror-catch-up")

    async def _catch_up(self) -> None:
        """Merge every batch of the backlog from PostgreSQL, then forget it there."""
        merged = 0
        try:
            while batch_ids := await self._durable.stale(CATCH_UP_CHUNK):
                states = []
                for batch_id in batch_ids:
                    with contextlib.suppress(UnknownBatch):  # nothing left to mirror
                        states.append(await self._durable.batch_state(batch_id))
                await self._mirror.merge(states)
                await self._durable.forget_stale(batch_ids)
                self._stale.difference_update(batch_ids)
                merged += len(batch_ids)
        except StateBackendUnavailable as exc:
            log.info("catching redis up stopped (%s); it resumes when redis is back", exc)
            return
        if merged:
            log.info("caught redis up: merged %d batch(es) from postgresql", merged)
