"""The calls a server has in flight, and the drain that ends them on shutdown.

Shutdown drains in three steps (``GrpcServer.close``): health says NOT_SERVING and the server
goes on serving for ``DRAIN_SECONDS`` (load balancers stop routing to it); then it refuses new
calls with UNAVAILABLE and gives the calls in flight ``SHUTDOWN_GRACE_SECONDS`` to finish; a
call still running after that is cancelled here and ends UNAVAILABLE too, never CANCELLED
(clients retry UNAVAILABLE on another replica; CANCELLED reads as the client's own doing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)

SHUTTING_DOWN = "server is shutting down; retry on another replica"


class Drain:
    """Tracks each call's task from ``begin`` to ``end``; ``close`` ends them all."""

    def __init__(self) -> None:
        self._calls: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.accepting = True
        self.cancelling = False  # set while ``close`` cancels the calls that did not finish

    def begin(self) -> bool:
        """Register the current call; False once the server no longer accepts calls."""
        if not self.accepting:
            return False
        task = asyncio.current_task()
        if task is not None:
            self._calls.add(task)
            self._idle.clear()
        return True

    def end(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._calls.discard(task)
        if not self._calls:
            self._idle.set()

    async def close(self, grace: float) -> None:
        """Refuse new calls, let those in flight finish within ``grace`` seconds, cancel the
        rest (each then ends UNAVAILABLE)."""
        self.accepting = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        if not self._calls:
            return
        log.warning("ending %d call(s) still running after %.1f s", len(self._calls), grace)
        self.cancelling = True
        for task in list(self._calls):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), 5.0)
