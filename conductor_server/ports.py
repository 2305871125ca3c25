"""The state store seam: what the conductor needs from wherever step outcomes are counted.

Implementations (``conductor_server.store``): ``MemoryStateStore`` (embedded mode) and
``ComposedStateStore`` (real mode: PostgreSQL, the authority, mirrored into Redis for reads),
over ``PostgresStateStore``. All of them count with ``conductor_server.domain.counting``, and one
contract suite (``tests/support/state_contract.py``) runs against each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

from conductor_server.domain.counting import Verdict
from conductor_server.domain.model import (
    BatchRegistration,
    EssayStepResult,
    OutcomeRecord,
    StepState,
)
from conductor_server.store.errors import PermanentStateError


@dataclass(slots=True)
class RecordResult:
    """What recording one outcome did.

    ``newly_recorded``: this call counted the outcome (False for a repeat of the same outcome).
    ``completed_step``: counting it made the step complete; exactly one record ever does.
    ``state``: the step's state once the call that carried the record was counted.
    ``cascaded``: dependants that completed with it because they expect no essays at all.
    ``verdict``: RECORDED, DUPLICATE, SUPERSEDED or LATE (``domain.counting.Verdict``).
    ``error``: why the record was refused; then every other field is empty.

    One is built per outcome on the consumer's hot path, so it is not frozen (a frozen
    dataclass costs four times as much to build); nothing changes one once a store returns it.
    """

    record: OutcomeRecord
    newly_recorded: bool = False
    completed_step: bool = False
    state: StepState | None = None
    cascaded: tuple[StepState, ...] = ()
    error: PermanentStateError | None = None
    verdict: Verdict | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class BatchState:
    """What the conductor knows of a batch: its size, its flags and the state of every step of
    the step table (dependencies first). ``version`` counts registrations that changed flags;
    ``epochs`` holds each step's epoch (``domain.counting``) where the store knows it."""

    batch_id: str
    essay_count: int
    flags: frozenset[str]
    steps: tuple[StepState, ...]
    version: int = 1
    epochs: Mapping[str, int] = field(default_factory=dict, compare=False)

    def step(self, name: str) -> StepState:
        for state in self.steps:
            if state.step == name:
                return state
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Reopened:
    """What reopening one step did: the essays open at the new attempt (batch order), and the
    step's state after."""

    step: str
    essay_ids: tuple[str, ...]
    state: StepState


@dataclass(frozen=True, slots=True)
class Expired:
    """What timing out one step did: the essays recorded TIMED_OUT now, and the state after."""

    essay_ids: tuple[str, ...]
    state: StepState


class StateStore(Protocol):
    """Registers batches and counts per-essay step outcomes exactly once."""

    async def register_batch(self, registration: BatchRegistration) -> bool:
        """Register a batch; True if it is new.

        Idempotent: the same essay set again is a no-op apart from replacing the flags.
        Raises ``RegistrationConflict`` for a different essay set, ``InvalidRegistration``.
        """
        ...

    async def record_outcomes(self, records: Sequence[OutcomeRecord]) -> list[RecordResult]:
        """Count each record exactly once; one result per record, in order.

        Permanent problems come back per record (an unknown step is reported before an unknown
        batch). A step's last outcome commits with its ``BatchStepCompleted`` event.
        ``StateBackendUnavailable`` fails the call; nothing of it is counted then.
        """
        ...

    async def batch_state(self, batch_id: str) -> BatchState:
        """The batch's size, flags and step states. Raises ``UnknownBatch``."""
        ...

    async def reopen(
        self, batch_id: str, run_id: str, attempt: int, steps: Sequence[str]
    ) -> list[Reopened]:
        """Open each step (of the table) at (``run_id``, ``attempt``) for its failed, timed-out
        and missing essays (``domain.counting``); one answer per step, in order. Raises
        ``UnknownBatch``; ``UnknownStep`` before changing anything."""
        ...

    async def expire(self, batch_id: str, step: str, run_id: str, attempt: int) -> Expired:
        """Record TIMED_OUT for every essay the step still waits for (``BatchTally.missing``),
        completing it with its ``BatchStepCompleted``. Raises ``UnknownBatch``, ``UnknownStep``."""
        ...

    async def essay_results(
        self, batch_id: str, essay_ids: Sequence[str]
    ) -> dict[str, list[EssayStepResult]]:
        """Each essay's step results, in step-table order (an essay not in the batch: none).
        Raises ``UnknownBatch``."""
        ...

    async def close(self) -> None:
        """Release the store's connections; idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
