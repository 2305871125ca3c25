"""The production state store: PostgreSQL is the authority, Redis serves the reads.

Writes go to PostgreSQL first; their results (and the outbox rows) are PostgreSQL's. Every
accepted record is then replayed into Redis (the script is idempotent, so records PostgreSQL had
already seen are no-ops there). Decisions:

- **Redis fails after PostgreSQL committed**: the call raises ``StateBackendUnavailable``. The
  outcome is durable, but Redis would miss it until replayed; the caller retries (the Kafka
  consumer does, an RPC client should), PostgreSQL answers "duplicate" and Redis catches up.
  Swallowing the error instead would leave Redis short for as long as the batch lives there.
- **Redis lost the batch** (flushed, restarted, expired): the script finds no marker, the batch is
  rebuilt from a PostgreSQL snapshot (``RedisStateStore.restore``) and the records are replayed.
- **Redis disagrees** (an outcome PostgreSQL accepted is a conflict or unexpected in Redis; only
  possible if Redis was written without PostgreSQL): the batch's keys are dropped, the next
  access rebuilds them.
- **Reads** come from Redis, rebuilt on a miss; if Redis is down they come from PostgreSQL.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

from conductor_server.domain.model import BatchRegistration, OutcomeRecord
from conductor_server.state.errors import StateBackendUnavailable, UnknownBatch
from conductor_server.state.postgres_store import PostgresStateStore
from conductor_server.state.protocol import BatchState, RecordResult
from conductor_server.state.redis_store import RedisStateStore
from mesh.resource import AsyncResource

LOST = "nobatch"  # Redis has no such batch (flushed, restarted, expired): rebuild it
MIRRORED = frozenset({"recorded", "duplicate"})  # Redis agrees with PostgreSQL

log = logging.getLogger(__name__)

_REBUILD_ATTEMPTS = 5


class ComposedStateStore(AsyncResource):
    """PostgreSQL then Redis. Takes ownership of both stores."""

    def __init__(self, durable: PostgresStateStore, hot: RedisStateStore) -> None:
        self._durable = durable
        self._hot = hot

    async def register_batch(self, registration: BatchRegistration) -> bool:
        registered = await self._durable.register(registration)
        await self._hot.restore(
            registration.batch_id,
            functools.partial(self._durable.snapshot, registration.batch_id),
            min_version=registered.version,
        )
        return registered.created

    async def record_outcomes(self, records: Sequence[OutcomeRecord]) -> list[RecordResult]:
        results = await self._durable.record_outcomes(records)
        accepted = [result.record for result in results if result.ok]
        if accepted:
            await self._mirror(accepted)
        return results

    async def _mirror(self, records: Sequence[OutcomeRecord]) -> None:
        """Replay PostgreSQL-accepted records into Redis until every one is in."""
        pending = list(records)
        for _ in range(_REBUILD_ATTEMPTS):
            verdicts = await self._hot.replay(pending)
            lost: set[str] = set()
            diverged: set[str] = set()
            for record, verdict in zip(pending, verdicts, strict=True):
                if verdict == LOST:
                    lost.add(record.batch_id)
                elif verdict not in MIRRORED:
                    diverged.add(record.batch_id)
            for batch_id in sorted(diverged):
                log.warning("redis disagrees with postgresql on batch %s; dropping it", batch_id)
                await self._hot.invalidate(batch_id)
            lost -= diverged
            if not lost:
                return
            for batch_id in sorted(lost):
                log.info("redis lost batch %s; rebuilding it from postgresql", batch_id)
                await self._restore(batch_id)
            pending = [record for record in pending if record.batch_id in lost]
        raise StateBackendUnavailable("redis", "batches kept disappearing while being rebuilt")

    async def batch_state(self, batch_id: str) -> BatchState:
        try:
            for _ in range(_REBUILD_ATTEMPTS):
                try:
                    return await self._hot.batch_state(batch_id)
                except UnknownBatch:
                    await self._restore(batch_id)
        except StateBackendUnavailable as exc:
            if exc.backend == "postgresql":
                raise
            log.warning("reading batch %s from postgresql: %s", batch_id, exc)
        return await self._durable.batch_state(batch_id)

    async def _restore(self, batch_id: str) -> None:
        await self._hot.restore(batch_id, functools.partial(self._durable.snapshot, batch_id))

    async def close(self) -> None:
        try:
            await self._hot.close()
        finally:
            await self._durable.close()
