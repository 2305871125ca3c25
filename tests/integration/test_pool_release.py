"""A pooled PostgreSQL connection goes back to the pool without asyncpg's reset query.

The reset (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) would be one more
round trip on every release. What it would have cleaned up is never left behind:
- a transaction left open is still rolled back;
- a listener unlistens before it lets its connection go, and ends the session when it cannot;
- migrations give their connection back reset (lock released, settings undone), or end its
  session when anything fails, an interruption included.

Real PostgreSQL, pools of one connection so that the next acquire gets the same session.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mesh.postgres import pool as postgres
from mesh.postgres.listen import PgListener
from mesh.postgres.schema import apply_migrations
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

MESH = {"mesh": "mesh.postgres.sql"}
ADVISORY_LOCKS = """
SELECT count(*) FROM pg_locks
 WHERE locktype = 'advisory'
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


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


async def _listening(pool: Any) -> list[str]:
    """The channels the sessions of a pool of two listen to (both acquired at once)."""
    async with pool.acquire(timeout=10) as one, pool.acquire(timeout=10) as two:
        found = []
        for conn in (one, two):
            found += [row[0] for row in await conn.fetch("SELECT pg_listening_channels()")]
        return found


async def test_a_listener_leaves_no_channel_on_its_connection(database_url: str) -> None:
    async with postgres.postgres_pool(database_url, 2, {}) as pool:
        heard: list[str] = []
        listener = PgListener(pool, "pool_release_test", heard.append)
        await listener.start()
        await pool.execute("SELECT pg_notify('pool_release_test', 'hello')")
        await eventually(lambda: heard == ["hello"], what="the notification")
        await listener.close()
        assert await _listening(pool) == []


class _UnlistenFails:
    """A pool whose connections cannot UNLISTEN (the call fails before reaching the server)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def acquire(self) -> Any:
        return _NoUnlisten(await self.pool.acquire())

    async def release(self, conn: Any) -> None:
        await self.pool.release(conn.conn)


class _NoUnlisten:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def remove_listener(self, *_: Any) -> None:
        raise ConnectionResetError("the UNLISTEN was lost")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


async def test_a_listener_that_cannot_unlisten_ends_its_session(database_url: str) -> None:
    async with postgres.postgres_pool(database_url, 2, {}) as pool:
        listener = PgListener(_UnlistenFails(pool), "pool_release_test", lambda _: None)
        await listener.start()
        await listener.close()
        assert await _listening(pool) == []


async def test_migrations_give_their_connection_back_reset(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "pool_release_migrations"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "0001_sets_a_setting.sql").write_text("SET application_name = 'from a migration';")
    monkeypatch.syspath_prepend(str(tmp_path))
    async with postgres.postgres_pool(database_url, 1, {}) as pool:
        applied = await apply_migrations(pool, {**MESH, "test": "pool_release_migrations"})
        assert [m.name for m in applied][-1] == "sets_a_setting"
        assert await pool.fetchval(ADVISORY_LOCKS) == 0
        assert await pool.fetchval("SHOW application_name") != "from a migration"
    sys.modules.pop("pool_release_migrations", None)


class _Interrupted:
    """A pool whose connection is interrupted (``CancelledError``, as a shutdown would) right
    after a statement starting with ``statement`` has run, or when it is reset; every other call
    goes to the real connection."""

    def __init__(self, pool: Any, statement: str) -> None:
        self.pool = pool
        self.statement = statement
        self.conn: Any = None
        self.session = 0

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        async with self.pool.acquire() as conn:
            self.conn = conn
            self.session = await conn.fetchval("SELECT pg_backend_pid()")
            yield self

    async def execute(self, query: str, *args: Any) -> Any:
        result = await self.conn.execute(query, *args)
        if query.startswith(self.statement):
            raise asyncio.CancelledError
        return result

    async def reset(self) -> None:
        if self.statement == "reset":
            raise asyncio.CancelledError
        await self.conn.reset()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


# the lock granted on the server as the client is interrupted; the reset after migrating
@pytest.mark.parametrize("statement", ["SELECT pg_advisory_lock", "reset"])
async def test_interrupted_migrations_end_their_session(database_url: str, statement: str) -> None:
    async with postgres.postgres_pool(database_url, 1, {}) as pool:
        interrupted = _Interrupted(pool, statement)
        with pytest.raises(asyncio.CancelledError):
            await apply_migrations(interrupted, MESH)
        other = await asyncpg.connect(database_url)
        try:

            async def ended() -> bool:
                sessions = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
                return bool(await other.fetchval(sessions, interrupted.session) == 0)

            await eventually(ended, what="the interrupted session to end")
            assert await other.fetchval(ADVISORY_LOCKS) == 0
        finally:
            await other.close()
        applied = await apply_migrations(pool, MESH)
        assert statement != "reset" or applied == []  # everything committed before the reset
