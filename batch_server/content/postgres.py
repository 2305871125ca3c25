"""Essay texts in PostgreSQL (table ``content_blobs``): the real mode's default content store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from batch_server.domain.errors import ContentNotFound
from batch_server.domain.identity import new_id
from batch_server.store.errors import translated

_PUT = """
INSERT INTO content_blobs (storage_id, content)
SELECT * FROM unnest($1::text[], $2::text[])
"""
_GET = "SELECT content FROM content_blobs WHERE storage_id = $1"


class PostgresContentStore:
    """A ``ContentStore`` over an asyncpg pool (owned by the caller)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def put_many(self, texts: Sequence[str]) -> list[str]:
        """Store every text in one statement: all or nothing."""
        ids = [new_id() for _ in texts]
        async with translated():
            await self._pool.execute(_PUT, ids, list(texts))
        return ids

    async def get(self, storage_id: str) -> str:
        async with translated():
            content = await self._pool.fetchval(_GET, storage_id)
        if content is None:
            raise ContentNotFound(storage_id)
        return str(content)
