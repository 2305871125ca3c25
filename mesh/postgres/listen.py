"""``LISTEN`` on one pooled PostgreSQL connection that comes back by itself after a loss.

Used by the outbox relay (a NOTIFY wakes it) and the BatchService's run-progress feed (a NOTIFY
wakes its watchers); for both a notification is an accelerator over a poll, so a lost
connection costs latency, never correctness. When the connection is lost (PostgreSQL restarted,
the network cut) the listener gives it back to the pool and listens again on a new one, with
backoff, until it gets through or is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from mesh.events.retry import Backoff
from mesh.resource import AsyncResource

log = logging.getLogger(__name__)

RELISTEN_BACKOFF = Backoff(initial=0.1, cap=5.0)


class PgListener(AsyncResource):
    """Calls ``on_payload`` with each notification's payload on ``channel``."""

    def __init__(
        self,
        pool: Any,
        channel: str,
        on_payload: Callable[[str], None],
        backoff: Backoff = RELISTEN_BACKOFF,
    ) -> None:
        self._pool = pool
        self._channel = channel
        self._on_payload = on_payload
        self._backoff = backoff
        self._conn: Any = None
        self._relistening: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def listening(self) -> bool:
        return self._conn is not None

    async def start(self) -> None:
        """Listen now; raise if PostgreSQL cannot be reached (start-up fails fast)."""
        await self._listen()

    def start_soon(self) -> None:
        """Listen in the background, retrying with backoff until it gets through."""
        self._relisten_in_background(after_loss=False)

    async def close(self) -> None:
        self._closed = True
        if self._relistening is not None:
            self._relistening.cancel()
            await asyncio.wait({self._relistening})
        await self._let_go()

    async def _listen(self) -> None:
        conn = await self._pool.acquire()
        try:
            await conn.add_listener(self._channel, self._notified)
            conn.add_termination_listener(self._lost)
        except BaseException:
            _end(conn)  # the LISTEN may have reached the server: never pool the session
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
        try:
            await conn.remove_listener(self._channel, self._notified)
        except BaseException as exc:
            _end(conn)  # the server may be gone, or still listening: never pool that session
            if not isinstance(exc, Exception):
                raise
        with contextlib.suppress(Exception):
            await self._pool.release(conn)

    def _lost(self, _conn: object) -> None:
        log.warning("LISTEN %s lost its connection; listening again", self._channel)
        self._relisten_in_background(after_loss=True)

    def _relisten_in_background(self, after_loss: bool) -> None:
        if self._closed or (self._relistening is not None and not self._relistening.done()):
            return
        self._relistening = asyncio.create_task(
            self._relisten(after_loss), name=f"listen-{self._channel}"
        )

    async def _relisten(self, after_loss: bool) -> None:
        await self._let_go()
        failures = 0
        while not self._closed:
            try:
                await self._listen()
            except Exception as exc:
                failures += 1
                delay = self._backoff.ceiling(failures)
                log.debug("LISTEN %s failed (%r); retrying in %.2fs", self._channel, exc, delay)
                await asyncio.sleep(delay)
                continue
            if after_loss:
                log.info("LISTEN %s again", self._channel)
            return

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_payload(payload)


def _end(conn: Any) -> None:
    """Close ``conn``'s session at once: a LISTEN it may still hold ends with it."""
    with contextlib.suppress(Exception):
        conn.terminate()
