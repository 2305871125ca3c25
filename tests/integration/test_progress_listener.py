"""The BatchService's LISTEN for run progress, against a real PostgreSQL that restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from batch_server.store.listener import ProgressListener
from batch_server.store.postgres import PROGRESS_CHANNEL
from mesh.retry import Backoff


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_the_listener_listens_again_after_postgresql_restarts(
    backends: Any, database_url: str
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    runs: list[str] = []

    async def notified(payload: str) -> bool:
        try:
            await pool.execute(f"NOTIFY {PROGRESS_CHANNEL}, '{payload}'")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False  # the pool is still finding out its old connections are gone
        await asyncio.sleep(0.1)
        return payload in runs

    try:
        backoff = Backoff(initial=0.05, cap=0.5)
        async with ProgressListener(pool, runs.append, backoff) as listener:
            await until(lambda: notified("run-before"), 10, "the first wake-up")
            backends.stop("postgres")
            try:

                async def lost() -> bool:
                    return not listener.listening

                await until(lost, 10, "the listener to notice the lost connection")
            finally:
                backends.start("postgres")
            # before the fix the listener stayed deaf until the server restarted
            await until(lambda: notified("run-after"), 30, "a wake-up after the restart")
            assert listener.listening
    finally:
        await pool.close()
