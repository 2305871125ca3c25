"""The real mode's state store: PostgreSQL decides and keeps, Redis serves the reads.

- **Writes** (registrations, outcomes) go to PostgreSQL, which applies the counting rule and
  commits the counts with their completion events. The resulting state of every batch the write
  touched is then merged into Redis (``RedisMirror``), even when nothing changed, so a repeated
  write (a redelivery after a crash between the two) brings Redis up to date.
- **Reads** come from Redis; a batch Redis does not have is read from PostgreSQL and merged.
- **Redis down** does not stop the product: a failed merge is logged and the batch is marked
  stale in this process, so its reads go to PostgreSQL until a later merge of it succeeds; every
  read falls back to PostgreSQL while Redis fails.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from conductor_server.domain.model import BatchRegistration, OutcomeRecord
from conductor_server.ports import BatchState, RecordResult
from conductor_server.store.errors import StateBackendUnavailable
from conductor_server.store.postgres import PostgresStateStore
from conductor_server.store.redis_mirror import RedisMirror
from mesh.resource import AsyncResource

log = logging.getLogger(__name__)


class ComposedStateStore(AsyncResource):
    """PostgreSQL, mirrored into Redis."""

    def __init__(self, durable: PostgresStateStore, mirror: RedisMirror) -> None:
        self._durable = durable
        self._mirror = mirror
        self._stale: set[str] = set()  # batches whose latest merge failed
        self._redis_down = False

    async def register_batch(self, registration: BatchRegistration) -> bool:
        created, state = await self._durable.register(registration)
        await self._merge([state])
        return created

    async def record_outcomes(self, records: Sequence[OutcomeRecord]) -> list[RecordResult]:
        recorded = await self._durable.record(records)
        await self._merge(recorded.states)
        return recorded.results

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
        ids = {state.batch_id for state in states}
        try:
            await self._mirror.merge(states)
        except StateBackendUnavailable as exc:
            self._stale |= ids
            self._redis_failed(exc)
            return
        self._stale -= ids
        if self._redis_down:
            self._redis_down = False
            log.info("redis is back; %d batch(es) still read from postgresql", len(self._stale))

    def _redis_failed(self, exc: StateBackendUnavailable) -> None:
        if not self._redis_down:
            self._redis_down = True
            log.warning("redis unavailable (%s); reading and counting with postgresql alone", exc)

    async def close(self) -> None:
        """Both stores belong to the caller: nothing to release."""
