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
from conductor_server.domain.model import BatchRegistration, OutcomeRecord, StepDefinition
from conductor_server.domain.resolution import Resolution
from conductor_server.ports import BatchState, RecordResult, StateStore
from conductor_server.rules import PipelineRules
from mesh.events.bus import EventPublisher

log = logging.getLogger(__name__)


def set_flags(flags: Mapping[str, bool]) -> frozenset[str]:
    """The names of the flags that are true."""
    return frozenset(name for name, value in flags.items() if value)


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
        registration = BatchRegistration(batch_id, essay_ids, set_flags(flags))
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
