"""The PipelineConductor's use cases: one class over the rules, the state store and the events.

The servicer and the Kafka consumer both call this; neither touches the store or the domain
directly. A completed step's ``BatchStepCompleted`` is the state store's to emit, with the
counts that complete it (the outbox in PostgreSQL, the bus in embedded mode).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from conductor_server import events
from conductor_server.domain.catalog import PipelineCatalog
from conductor_server.domain.errors import PreconditionFailed
from conductor_server.domain.model import (
    BatchRegistration,
    EssayStepResult,
    OutcomeRecord,
    StepDefinition,
)
from conductor_server.domain.resolution import Resolution, unmet_flags
from conductor_server.ports import BatchState, Expired, RecordResult, Reopened, StateStore
from conductor_server.rules import PipelineRules
from mesh.events.bus import EventPublisher

log = logging.getLogger(__name__)


def merged_flags(registered: frozenset[str], overrides: Mapping[str, bool]) -> frozenset[str]:
    """The batch's flags with a request's overrides applied (true sets, false clears)."""
    if not overrides:
        return registered
    return frozenset(
        {f for f in registered if overrides.get(f, True)} | {f for f, v in overrides.items() if v}
    )


class Conductor:
    def __init__(self, rules: PipelineRules, store: StateStore, events_out: EventPublisher) -> None:
        self._rules = rules
        self._store = store
        self._events = events_out

    @property
    def catalog(self) -> PipelineCatalog:
        return self._rules.catalog

    async def register_batch(
        self, batch_id: str, essay_ids: tuple[str, ...], flags: Mapping[str, bool]
    ) -> bool:
        """Register the batch with the flags set true in ``flags``, every name of which must be
        a known flag (``UnknownFlag`` otherwise, before anything is stored)."""
        self.catalog.check_flags(flags)
        registration = BatchRegistration(batch_id, essay_ids, merged_flags(frozenset(), flags))
        created = await self._store.register_batch(registration)
        log.info(
            "batch %s %s with %d essays, flags %s",
            registration.batch_id,
            "registered" if created else "re-registered",
            len(registration.essay_ids),
            sorted(registration.flags),
        )
        return created

    async def resolve(
        self, batch_id: str, target: str, overrides: Mapping[str, bool], dry_run: bool
    ) -> Resolution:
        self.catalog.check_flags(overrides)
        state = await self._store.batch_state(batch_id)
        flags = merged_flags(state.flags, overrides)
        resolution = self._rules.resolve(target, {s.step: s for s in state.steps}, flags)
        if resolution.pruned and not dry_run:
            await self._events.publish_many(
                [events.phase_skipped(batch_id, p.step.name, target) for p in resolution.pruned]
            )
        return resolution

    async def check_prerequisites(
        self, batch_id: str, step: str, overrides: Mapping[str, bool]
    ) -> StepDefinition:
        self.catalog.check_flags(overrides)
        state = await self._store.batch_state(batch_id)
        flags = merged_flags(state.flags, overrides)
        return self._rules.check_prerequisites(step, {s.step: s for s in state.steps}, flags)

    async def record_outcomes(self, records: Sequence[OutcomeRecord]) -> list[RecordResult]:
        """Count ``records``; the store emits the completion of each step they complete."""
        return await self._store.record_outcomes(records)

    async def batch_state(self, batch_id: str) -> BatchState:
        return await self._store.batch_state(batch_id)

    async def reopen(
        self, batch_id: str, run_id: str, attempt: int, steps: Sequence[str]
    ) -> list[Reopened]:
        """A retry's new attempt: reopen the steps' failed and missing essays. A step that
        requires a flag the batch no longer has cannot run again (``PreconditionFailed``)."""
        state = await self._store.batch_state(batch_id)
        missing = unmet_flags(
            [self.catalog.steps[step] for step in steps if step in self.catalog.steps], state.flags
        )
        if missing:
            raise PreconditionFailed(f"retry of run {run_id}", missing)
        reopened = await self._store.reopen(batch_id, run_id, attempt, steps)
        log.info(
            "batch %s: run %s attempt %d reopened %s",
            batch_id,
            run_id,
            attempt,
            {r.step: len(r.essay_ids) for r in reopened},
        )
        return reopened

    async def expire(self, batch_id: str, step: str, run_id: str, attempt: int) -> Expired:
        """A step's timeout expired: its missing essays become TIMED_OUT failures."""
        expired = await self._store.expire(batch_id, step, run_id, attempt)
        if expired.essay_ids:
            log.info(
                "batch %s: step %s of run %s attempt %d timed out for %d essay(s)",
                batch_id,
                step,
                run_id,
                attempt,
                len(expired.essay_ids),
            )
        return expired

    async def essay_results(
        self, batch_id: str, essay_ids: Sequence[str]
    ) -> dict[str, list[EssayStepResult]]:
        return await self._store.essay_results(batch_id, essay_ids)
