"""A pooled PostgreSQL connection goes back to the pool without asyncpg's reset query.

The reset (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) would be one more
round trip on every release. What it would have cleaned up is never left behind: a transaction
left open is still rolled back, a listener unlistens before it lets its connection go, and the
migrations' advisory lock is released, or its session ended, before their connection goes back.
Real PostgreSQL, pools of one connection so that the next acquire gets the same session.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from mesh.postgres import pool as postgres
from mesh.postgres.listen import PgListener
from mesh.postgres.schema import apply_migrations
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

ADVISORY_LOCKS = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"


async def test_a_released_connection_goes_back_without_a_query(database_url: str) -> None:
    async with postgres.postgres_pool(database_url, 1, {}) as pool:
        conn = await pool.acquire()
        session = await conn.fetchval("SELECT pg_backend_pid()")
        sent: list[str] = []
        conn.add_query_logger(lambda logged: sent.append(logged.query))
        await pool.release(conn)
        assert sent == []
        async with pool.acquire() as again:
            assert await again.fetchval("SELECT pg_backend_pid()") == session


async def test_a_transaction_left_open_is_rolled_back_on_release(database_url: str) -> None:
    async with postgres.postgres_pool(database_url, 1, {}) as pool:
        await pool.execute("CREATE TABLE kept (n int)")
        conn = await pool.acquire()
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO kept VALUES (1)")
        await pool.release(conn)
        async with pool.acquire() as again:
            assert not again.is_in_transaction()
            assert await again.fetchval("SELECT count(*) FROM kept") == 0


async def test_a_listener_leaves_no_channel_on_its_connection(database_url: str) -> None:
    async with postgres.postgres_pool(database_url, 2, {}) as pool:
        heard: list[str] = []
        listener = PgListener(pool, "pool_release_test", heard.append)
        await listener.start()
        await pool.execute("SELECT pg_notify('pool_release_test', 'hello')")
        await eventually(lambda: heard == ["hello"], what="the notification")
        await listener.close()
        async with pool.acquire() as one, pool.acquire() as two:  # the listener's is one
            for conn in (one, two):
                assert await conn.fetch("SELECT pg_listening_channels()") == []


async def test_migrations_give_their_advisory_lock_back(database_url: str) -> None:
    async with postgres.postgres_pool(database_url, 1, {}) as pool:
        await apply_migrations(pool, {"mesh": "mesh.postgres.sql"})
        assert await pool.fetchval(ADVISORY_LOCKS) == 0


class _UnlockCancelled:
    """A pool whose connection's ``pg_advisory_unlock`` is cancelled before it is sent (a
    shutdown arriving at that moment); every other call goes to the real connection."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.conn: Any = None
        self.session = 0

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        async with self.pool.acquire() as conn:
            self.conn = conn
            self.session = await conn.fetchval("SELECT pg_backend_pid()")
            yield self

    async def execute(self, query: str, *args: Any) -> Any:
        if query.startswith("SELECT pg_advisory_unlock"):
            raise asyncio.CancelledError
        return await self.conn.execute(query, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


async def test_migrations_interrupted_at_the_unlock_end_their_session(
    database_url: str,
) -> None:
    async with postgres.postgres_pool(database_url, 1, {}) as pool:
        interrupted = _UnlockCancelled(pool)
        with pytest.raises(asyncio.CancelledError):
            await apply_migrations(interrupted, {"mesh": "mesh.postgres.sql"})
        other = await asyncpg.connect(database_url)
        try:

            async def ended() -> bool:
                sessions = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
                return bool(await other.fetchval(sessions, interrupted.session) == 0)

            await eventually(ended, what="the interrupted session to end")
            assert await other.fetchval(ADVISORY_LOCKS) == 0
        finally:
            await other.close()
        assert await apply_migrations(pool, {"mesh": "mesh.postgres.sql"}) == []
