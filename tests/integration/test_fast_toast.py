"""Large values are stored with the fast compression (``mesh_fast_toast``): lz4, or none on a
server without it, never the default pglz.

Real PostgreSQL, both servers' migrations on fresh databases; a large value of each column is
written and the method PostgreSQL stored it with is read back.
"""

from __future__ import annotations

import pytest

from batch_server.store.postgres import MIGRATIONS as BATCH_MIGRATIONS
from conductor_server.store.postgres import MIGRATIONS as CONDUCTOR_MIGRATIONS
from mesh.postgres import pool as postgres

pytestmark = pytest.mark.integration

FAST = {"lz4", None}  # None: stored uncompressed (a server built without lz4)
LARGE = [f"essay-{n:05d}-{n * 7919 % 10007:05d}" for n in range(10_000)]  # ~210 KB as text


async def _compression(conn: object, table: str, column: str) -> str | None:
    query = f"SELECT pg_column_compression({column}) FROM {table} ORDER BY ctid DESC LIMIT 1"
    return await conn.fetchval(query)  # type: ignore[attr-defined,no-any-return]


async def test_the_conductor_outbox_payloads_use_the_fast_compression(database_url: str) -> None:
    async with postgres.postgres_pool(database_url, 1, CONDUCTOR_MIGRATIONS) as pool:
        await pool.execute(
            "INSERT INTO event_outbox (event_id, topic_kind, payload, headers) "
            "VALUES ('e1', 'batch_step_completed', $1, '{}')",
            "\n".join(LARGE).encode(),
        )
        assert await _compression(pool, "event_outbox", "payload") in FAST


async def test_the_batch_service_large_columns_use_the_fast_compression(
    database_url: str,
) -> None:
    async with (
        postgres.postgres_pool(database_url, 1, BATCH_MIGRATIONS) as pool,
        pool.acquire() as conn,
    ):
        await conn.execute(
            "INSERT INTO event_outbox (event_id, topic_kind, payload, headers) "
            "VALUES ('e1', 'step_command', $1, '{}')",
            "\n".join(LARGE).encode(),
        )
        await conn.execute(
            "INSERT INTO content_blobs (storage_id, content) VALUES ('s1', $1)", " ".join(LARGE)
        )
        columns = {
            ("event_outbox", "payload"),
            ("content_blobs", "content"),
            ("run_steps", "essay_ids"),
            ("run_steps", "retry_essays"),
            ("batch_step_results", "succeeded_essays"),
        }
        declared = await conn.fetch(
            "SELECT attrelid::regclass::text AS tab, attname, attcompression, attstorage "
            "FROM pg_attribute WHERE attrelid::regclass::text = ANY($1::text[]) AND attnum > 0",
            sorted({table for table, _ in columns}),
        )
        fast = {
            (row["tab"], row["attname"])
            for row in declared
            if row["attcompression"] == b"l" or row["attstorage"] == b"e"
        }
        assert columns <= fast
        for table, column in (("event_outbox", "payload"), ("content_blobs", "content")):
            assert await _compression(conn, table, column) in FAST
