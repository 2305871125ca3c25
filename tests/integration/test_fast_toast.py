"""Large values are stored with the fast compression (``mesh_fast_toast``): lz4, or none on a
server without it, never the default pglz.

Real PostgreSQL, both servers' migrations on fresh databases; a large value of each column is
written and the method PostgreSQL stored it with is read back.
"""

from __future__ import annotations

import json

import pytest

from batch_server.store.postgres import MIGRATIONS as BATCH_MIGRATIONS
from conductor_server.store.postgres import MIGRATIONS as CONDUCTOR_MIGRATIONS
from mesh.postgres import pool as postgres
from mesh.postgres.schema import apply_migrations

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


async def test_step_results_written_as_jsonb_read_the_same_after_the_move_to_json(
    database_url: str,
) -> None:
    """Migration 0007 turns ``succeeded_essays`` from jsonb into json with the rows it holds:
    a result written before it reads back the same after, and keeps the fast compression."""
    essays = {essay: f"text-{essay}" for essay in LARGE}
    async with postgres.postgres_pool(database_url, 1, BATCH_MIGRATIONS) as pool:
        await pool.execute(  # the schema as it was before 0007
            "ALTER TABLE batch_step_results ALTER COLUMN succeeded_essays TYPE jsonb; "
            "DELETE FROM schema_migrations WHERE source = 'batch' AND version = 7"
        )
        await pool.execute(
            "INSERT INTO batches (batch_id, request_id, fingerprint, name, course_code, language, "
            "flags, labels, essay_count, created_at) "
            "VALUES ('b1', 'r1', 'f', 'n', 'c', 'en', '{}', '{}', 1, now())"
        )
        await pool.execute(
            "INSERT INTO batch_step_results (batch_id, step, satisfied, succeeded, failed, total, "
            "succeeded_essays) VALUES ('b1', 'spellcheck', true, 1, 0, 1, $1::jsonb)",
            json.dumps(essays),
        )
        applied = await apply_migrations(pool, BATCH_MIGRATIONS)
        assert [(m.source, m.version) for m in applied] == [("batch", 7)]
        row = await pool.fetchrow(
            "SELECT pg_typeof(succeeded_essays)::text AS type, succeeded_essays "
            "FROM batch_step_results"
        )
        assert row["type"] == "json"
        assert json.loads(row["succeeded_essays"]) == essays
        declared = await pool.fetchrow(
            "SELECT attcompression, attstorage FROM pg_attribute "
            "WHERE attrelid = 'batch_step_results'::regclass AND attname = 'succeeded_essays'"
        )
        assert declared["attcompression"] == b"l" or declared["attstorage"] == b"e"
