"""``DeadlineWatch``: dispatched steps whose timeout passed are timed out at the conductor.

A step with a timeout gets a deadline when it is dispatched (``domain.run``). Every
``interval`` seconds the watch claims the steps whose deadline passed (``BatchStore.claim_due``:
a lease, so replicas do not act on one step at once, and a step a crashed replica claimed is
taken over once the lease ends) and asks the conductor to time each out (``ExpireStep``): the
essays still without an outcome fail with TIMED_OUT, which completes the step, and its
``BatchStepCompleted`` advances the run as any completion does. The deadline is in the store, so
a restart or another replica keeps it; ``ExpireStep`` is idempotent, so asking twice is harmless.
A conductor that cannot be reached is asked again once the lease ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from batch_server.conductor import Conductor
from batch_server.metrics import BatchMetrics
from batch_server.ports import BatchStore, DueStep

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0  # a claimed step is claimed again after this long without its completion
CLAIMED_PER_ROUND = 100


class DeadlineWatch:
    """A background loop (``run`` until ``stop``) over a ``BatchStore`` and the conductor."""

    def __init__(
        self,
        store: BatchStore,
        conductor: Conductor,
        clock: Callable[[], datetime],
        *,
        interval: float = 1.0,
        metrics: BatchMetrics | None = None,
    ) -> None:
        self._store = store
        self._conductor = conductor
        self._now = clock
        self._interval = interval
        self._metrics = metrics
        self._stopping = asyncio.Event()

    async def expire_due(self) -> None:
        """Time out every step due now."""
        due = await self._store.claim_due(self._now(), LEASE_SECONDS, CLAIMED_PER_ROUND)
        await asyncio.gather(*(self._expire(step) for step in due))

    async def _expire(self, step: DueStep) -> None:
        try:
            timed_out = await self._conductor.expire(
                step.batch_id, step.step, step.run_id, step.attempt
            )
        except Exception as exc:  # the conductor may be down: the lease brings the step back
            log.warning(
                "step %s of run %s (attempt %d) is past its deadline but could not be timed "
                "out yet: %s",
                step.step,
                step.run_id,
                step.attempt,
                exc,
            )
            return
        if self._metrics is not None:
            self._metrics.steps_timed_out.labels(step.step).inc()
        log.info(
            "step %s of run %s (attempt %d) timed out: %d essay(s) failed with TIMED_OUT",
            step.step,
            step.run_id,
            step.attempt,
            timed_out,
        )

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.expire_due()
            except Exception as exc:  # the database may be down: the probes report that
                log.debug("deadlines not checked: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)

    async def stop(self) -> None:
        self._stopping.set()
