"""Cross-replica wake-ups for watchers: ``LISTEN batch_run_progress`` on one pooled connection.

The PostgreSQL store sends ``NOTIFY batch_run_progress, '<run_id>'`` with every committed run
change; this listener forwards each to ``on_run``. It is an accelerator only: while its
connection is down, watchers still see every change through their poll. When the connection is
lost (PostgreSQL restarted, the network cut), the listener gives it back to the pool and listens
again on a new one, with backoff, so the wake-ups return with the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from batch_server.store.postgres import PROGRESS_CHANNEL
from mesh.retry import Backoff

log = logging.getLogger(__name__)

RELISTEN_BACKOFF = Backoff(initial=0.1, cap=5.0)


class ProgressListener:
    """An async context manager holding the listening connection."""

    def __init__(
        self, pool: Any, on_run: Callable[[str], None], backoff: Backoff = RELISTEN_BACKOFF
    ) -> None:
        self._pool = pool
        self._on_run = on_run
        self._backoff = backoff
        self._conn: Any = None
        self._relistening: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def listening(self) -> bool:
        return self._conn is not None

    async def __aenter__(self) -> Self:
        await self._listen()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._relistening is not None:
            self._relistening.cancel()
            await asyncio.wait({self._relistening})
        await self._let_go()

    async def _listen(self) -> None:
        conn = await self._pool.acquire()
        try:
            await conn.add_listener(PROGRESS_CHANNEL, self._notified)
            conn.add_termination_listener(self._lost)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._pool.release(conn)
            raise
        self._conn = conn

    async def _let_go(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):  # the server may be gone, the proxy released
            conn.remove_termination_listener(self._lost)
        with contextlib.suppress(Exception):
            await conn.remove_listener(PROGRESS_CHANNEL, self._notified)
        with contextlib.suppress(Exception):
            await self._pool.release(conn)

    def _lost(self, _conn: object) -> None:
        if self._closed or (self._relistening is not None and not self._relistening.done()):
            return
        log.warning(
            "LISTEN %s lost its connection; watchers poll until it is back", PROGRESS_CHANNEL
        )
        self._relistening = asyncio.create_task(self._relisten(), name="progress-relisten")

    async def _relisten(self) -> None:
        await self._let_go()
        failures = 0
        while not self._closed:
            try:
                await self._listen()
            except Exception as exc:
                failures += 1
                delay = self._backoff.ceiling(failures)
                log.debug("LISTEN %s failed (%r); retrying in %.2fs", PROGRESS_CHANNEL, exc, delay)
                await asyncio.sleep(delay)
                continue
            log.info("LISTEN %s again", PROGRESS_CHANNEL)
            return

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_run(payload)
