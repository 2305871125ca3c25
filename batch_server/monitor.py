"""``RunMonitor``: the active runs' gauges, refreshed off the request path.

Every ``interval`` seconds it asks the store how many runs are pending or running and since
when the oldest is, and sets ``batch_active_runs`` and ``batch_oldest_active_run_age_seconds``
(the alert on runs stuck past their timeouts reads the latter). A failed read (the database
down) leaves the gauges as they were and is tried again at the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from batch_server.metrics import BatchMetrics
from batch_server.ports import BatchStore
from batch_server.service import Clock, utc_now

log = logging.getLogger(__name__)


class RunMonitor:
    """A background loop (``run`` until ``stop``) over a ``BatchStore``."""

    def __init__(
        self,
        store: BatchStore,
        metrics: BatchMetrics,
        interval: float = 15.0,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._interval = interval
        self._now = clock
        self._stopping = asyncio.Event()

    async def refresh(self) -> None:
        count, oldest = await self._store.active_runs()
        self._metrics.active_runs.set(count)
        self._metrics.oldest_active_run.set(_age(oldest, self._now()))

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # the database may be down: the probes report that
                log.debug("active runs not refreshed: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)

    async def stop(self) -> None:
        self._stopping.set()


def _age(oldest: datetime | None, now: datetime) -> float:
    return max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
