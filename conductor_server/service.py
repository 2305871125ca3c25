"""The PipelineConductor's use cases: one class over the rules, the state store and the events.

The servicer and the Kafka consumer both call this; neither touches the store or the domain
directly. Who announces a completed step depends on the mode: with PostgreSQL, the store writes
the ``BatchStepCompleted`` outbox row in the very transaction that counted the last outcome (so a
crash cannot lose it) and there is no announcer; in embedded mode the in-memory store has no
outbox and a ``CompletionAnnouncer`` publishes it. Either way the event id is deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from conductor_server import events
from conductor_server.domain.catalog import PipelineCatalog
from conductor_server.domain.model import BatchRegistration, OutcomeRecord, StepDefinition
from conductor_server.domain.resolution import Resolution
from conductor_server.pipeline_rules import PipelineRules
from conductor_server.state.protocol import BatchState, RecordResult, StateStore
from mesh.bus import EventPublisher, OutgoingEvent

log = logging.getLogger(__name__)


def merged_flags(registered: frozenset[str], overrides: Mapping[str, bool]) -> frozenset[str]:
    """The batch's flags with a request's overrides applied (true sets, false clears)."""
    if not overrides:
        return registered
    return frozenset(
        {f for f in registered if overrides.get(f, True)} | {f for f, v in overrides.items() if v}
    )


SucceededEssays = Callable[[str, str], Sequence[tuple[str, str]]]


class CompletionAnnouncer:
    """Embedded mode's stand-in for the outbox: publishes ``BatchStepCompleted`` events."""

    def __init__(self, publisher: EventPublisher, succeeded_essays: SucceededEssays) -> None:
        self._publisher = publisher
        self._succeeded_essays = succeeded_essays

    async def announce(self, results: Sequence[RecordResult]) -> None:
        announcements: list[OutgoingEvent] = []
        for result in results:
            if not result.completed_step or result.state is None:
                continue
            batch_id = result.record.batch_id
            for state in (result.state, *result.cascaded):
                essays = self._succeeded_essays(batch_id, state.step)
                announcements.append(events.step_completed(batch_id, state, essays))
        if announcements:
            await self._publisher.publish_many(announcements)


class Conductor:
    def __init__(
        self,
        rules: PipelineRules,
        store: StateStore,
        events_out: EventPublisher,
        completions: CompletionAnnouncer | None,
    ) -> None:
        self._rules = rules
        self._store = store
        self._events = events_out
        self._completions = completions

    @property
    def catalog(self) -> PipelineCatalog:
        return self._rules.catalog

    async def register_batch(self, registration: BatchRegistration) -> bool:
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
        state = await self._store.batch_state(batch_id)
        flags = merged_flags(state.registration.flags, overrides)
        resolution = self._rules.resolve(target, {s.step: s for s in state.steps}, flags)
        if resolution.pruned and not dry_run:
            await self._events.publish_many(
                [events.phase_skipped(batch_id, p.step.name, target) for p in resolution.pruned]
            )
        return resolution

    async def check_prerequisites(
        self, batch_id: str, step: str, overrides: Mapping[str, bool]
    ) -> StepDefinition:
        state = await self._store.batch_state(batch_id)
        flags = merged_flags(state.registration.flags, overrides)
        return self._rules.check_prerequisites(step, {s.step: s for s in state.steps}, flags)

    async def record_outcomes(self, records: Sequence[OutcomeRecord]) -> list[RecordResult]:
        """Count ``records`` (one store round trip) and announce the steps they completed."""
        results = await self._store.record_outcomes(records)
        if self._completions is not None:
            await self._completions.announce(results)
        return results

    async def batch_state(self, batch_id: str) -> BatchState:
        return await self._store.batch_state(batch_id)
