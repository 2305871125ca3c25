"""Wake-ups for WatchBatch streams: in-process notifications with a poll fallback.

A watcher subscribes to a run, then waits until the run is notified (a change committed in this
process, or a PostgreSQL ``NOTIFY`` from another replica), the poll interval passes (so a change
made elsewhere is seen even without notifications), or the feed closes (shutdown). After each
wake-up it reads the run's transitions after the last one it sent, in order: a notification is
only a hint, never the data, so a lost or early notification cannot lose an update.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator


class ProgressFeed:
    """Run id → the events of the watchers waiting for it."""

    def __init__(self, poll_interval: float = 1.0) -> None:
        self.poll_interval = poll_interval
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self.closed = False

    def notify(self, run_ids: Iterable[str]) -> None:
        for run_id in run_ids:
            for event in self._waiters.get(run_id, ()):
                event.set()

    @contextlib.contextmanager
    def subscribe(self, run_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters.setdefault(run_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(run_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[run_id]

    async def wait(self, event: asyncio.Event) -> None:
        """Until ``event`` is set, the poll interval passes, or the feed closes."""
        if self.closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), self.poll_interval)
        event.clear()

    def close(self) -> None:
        """Wake every watcher for the last time (shutdown); idempotent."""
        self.closed = True
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    @property
    def watchers(self) -> int:
        return sum(len(w) for w in self._waiters.values())
