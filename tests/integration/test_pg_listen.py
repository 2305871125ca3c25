"""``PgListener`` (the relay's and the run-progress feed's LISTEN), against a PostgreSQL that
restarts."""

from __future__ import annotations

from typing import Any

import asyncpg

from batch_server.store.postgres import PROGRESS_CHANNEL
from mesh.events.retry import Backoff
from mesh.postgres.listen import PgListener
from tests.support.polling import eventually

# while the pool finds out its old connections are gone, a NOTIFY fails: "not yet"
RESTARTING = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def test_the_listener_listens_again_after_postgresql_restarts(
    backends: Any, database_url: str
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    runs: list[str] = []

    async def notified(payload: str) -> bool:
        # a NOTIFY on every check (one sent while the listener is deaf is lost); it arrives in
        # the background, so a later check sees it
        await pool.execute(f"NOTIFY {PROGRESS_CHANNEL}, '{payload}'")
        return payload in runs

    try:
        backoff = Backoff(initial=0.05, cap=0.5)
        async with PgListener(pool, PROGRESS_CHANNEL, runs.append, backoff) as listener:
            await eventually(lambda: notified("run-before"), 10, what="a NOTIFY before the outage")
            backends.stop("postgres")
            try:
                await eventually(
                    lambda: not listener.listening, 10, what="the listener to notice the loss"
                )
            finally:
                backends.start("postgres")
            # before the fix the listener stayed deaf until the server restarted
            await eventually(
                lambda: notified("run-after"), 30, RESTARTING, what="a NOTIFY after the restart"
            )
            assert listener.listening
    finally:
        await pool.close()
