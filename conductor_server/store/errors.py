"""Errors of the state store, with typed attributes.

::

    StateError                      .retriable (class attribute) decides retry vs dead letter
    ├── PermanentStateError         retriable = False: the input can never be processed
    │   ├── UnknownBatch            .batch_id: no batch of that id is registered
    │   ├── UnknownStep             .batch_id, .step: the step is not in the step table
    │   ├── EssayNotExpected        .batch_id, .step, .essay_id: not in the batch, or not in the
    │   │                           step's expected set (including a step still WAITING/BLOCKED)
    │   ├── StepNotAllowed          .batch_id, .step, .missing_flags: the step requires flags the
    │   │                           batch does not have (dispatch would refuse it too)
    │   ├── ConflictingOutcome      .batch_id, .step, .essay_id, .recorded, .attempted: a second,
    │   │                           different outcome for an essay (the first one stands)
    │   ├── RegistrationConflict    .batch_id: registered again with a different essay set
    │   └── InvalidRegistration     .batch_id, .reason: no essays, or an essay listed twice
    └── StateBackendUnavailable     retriable = True: Redis or PostgreSQL failed; also a
                                    ``mesh.errors.BackendUnavailable`` (gRPC UNAVAILABLE)

The same outcome recorded twice is not an error: the repeat is a no-op. ``record_outcomes``
returns permanent errors per record (one bad record does not fail the others) and raises
``StateBackendUnavailable`` for the whole call.
"""

from __future__ import annotations

from collections.abc import Sequence

from conductor_server.domain.model import BatchRegistration, Outcome
from mesh.errors import BackendUnavailable


class StateError(Exception):
    """Root of the state store's errors."""

    retriable = False


class PermanentStateError(StateError):
    """The input is wrong and will stay wrong: dead-letter it, never retry."""

    retriable = False


class UnknownBatch(PermanentStateError):
    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        super().__init__(f"unknown batch {batch_id!r}")


class UnknownStep(PermanentStateError):
    def __init__(self, batch_id: str, step: str) -> None:
        self.batch_id = batch_id
        self.step = step
        super().__init__(f"batch {batch_id!r}: unknown step {step!r}")


class EssayNotExpected(PermanentStateError):
    def __init__(self, batch_id: str, step: str, essay_id: str) -> None:
        self.batch_id = batch_id
        self.step = step
        self.essay_id = essay_id
        super().__init__(
            f"batch {batch_id!r}, step {step!r}: essay {essay_id!r} is not expected "
            "(not in the batch, failed a dependency, or the step is not ready)"
        )


class StepNotAllowed(PermanentStateError):
    def __init__(self, batch_id: str, step: str, missing_flags: Sequence[str]) -> None:
        self.batch_id = batch_id
        self.step = step
        self.missing_flags = tuple(missing_flags)
        super().__init__(
            f"batch {batch_id!r}: step {step!r} requires flags the batch does not have: "
            f"{', '.join(self.missing_flags)}"
        )


class ConflictingOutcome(PermanentStateError):
    def __init__(
        self, batch_id: str, step: str, essay_id: str, recorded: Outcome, attempted: Outcome
    ) -> None:
        self.batch_id = batch_id
        self.step = step
        self.essay_id = essay_id
        self.recorded = recorded
        self.attempted = attempted
        super().__init__(
            f"batch {batch_id!r}, step {step!r}: essay {essay_id!r} already {recorded.value}, "
            f"cannot become {attempted.value}"
        )


class RegistrationConflict(PermanentStateError):
    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        super().__init__(f"batch {batch_id!r} is already registered with other essays")


class InvalidRegistration(PermanentStateError):
    def __init__(self, batch_id: str, reason: str) -> None:
        self.batch_id = batch_id
        self.reason = reason
        super().__init__(f"batch {batch_id!r}: invalid registration: {reason}")


class StateBackendUnavailable(StateError, BackendUnavailable):
    """A backend call failed (connection refused or lost, timeout, failover): retry later."""

    retriable = True

    def __init__(self, backend: str, reason: str) -> None:
        BackendUnavailable.__init__(self, backend, reason)


def check_registration(registration: BatchRegistration) -> None:
    """Raise ``InvalidRegistration`` unless the batch lists at least one essay, each once."""
    essays = registration.essay_ids
    if not essays:
        raise InvalidRegistration(registration.batch_id, "no essays")
    seen: set[str] = set()
    for essay in essays:
        if essay in seen:
            raise InvalidRegistration(registration.batch_id, f"essay {essay!r} listed twice")
        seen.add(essay)
