"""Cross-replica wake-ups for watchers: ``LISTEN batch_run_progress`` on one pooled connection.

The PostgreSQL store sends ``NOTIFY batch_run_progress, '<run_id>'`` with every committed run
change; this listener forwards each to ``on_run``. It is an accelerator only: if its connection
drops, watchers still see every change through their poll.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from batch_server.store.postgres import PROGRESS_CHANNEL

log = logging.getLogger(__name__)


class ProgressListener:
    """An async context manager holding the listening connection."""

    def __init__(self, pool: Any, on_run: Callable[[str], None]) -> None:
        self._pool = pool
        self._on_run = on_run
        self._conn: Any = None

    async def __aenter__(self) -> Self:
        self._conn = await self._pool.acquire()
        await self._conn.add_listener(PROGRESS_CHANNEL, self._notified)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):  # the server may be gone already
            await conn.remove_listener(PROGRESS_CHANNEL, self._notified)
        with contextlib.suppress(Exception):
            await self._pool.release(conn)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_run(payload)
