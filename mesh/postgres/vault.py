"""Where the original value of an oversized dead letter is kept: PostgreSQL's
``dead_letter_payloads`` (``mesh.events.deadletter`` decides when; this only stores)."""

from __future__ import annotations

from typing import Any

from generated.huleedu.events.v1 import events_pb2
from mesh.events.deadletter import Failure

_KEEP = """
INSERT INTO dead_letter_payloads (sha256, payload, original_topic, original_offset, partition,
                                  consumer_group)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sha256) DO NOTHING
"""
_FETCH = "SELECT payload FROM dead_letter_payloads WHERE sha256 = $1"


class PostgresPayloadVault:
    """A ``mesh.events.deadletter.PayloadVault`` over a pool (the caller's)."""

    storage = events_pb2.PAYLOAD_STORAGE_POSTGRESQL

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def keep(self, sha256: str, payload: bytes, failure: Failure, group: str) -> None:
        record = failure.record
        await self._pool.execute(
            _KEEP, sha256, payload, record.topic, record.offset, record.partition, group
        )

    async def fetch(self, sha256: str) -> bytes | None:
        value = await self._pool.fetchval(_FETCH, sha256)
        return bytes(value) if value is not None else None
