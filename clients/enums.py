"""The contract's enums as Python enums, so that what a person reads is a name, not a number.

Protobuf messages hold enum fields as plain ints (``update.run.status == 3``). Each class here
has exactly the members of one proto enum (a unit test holds them to the descriptors), without
the proto's prefix; a member equals the number in the message, and prints as its name::

    >>> status = RunStatus(update.run.status)
    >>> print(status, status.value == batch_pb2.RUN_STATUS_COMPLETED)
    COMPLETED True
"""

from __future__ import annotations

import enum


class ContractEnum(enum.IntEnum):
    """An int-valued proto enum whose ``str`` and format are the member's name."""

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"


class RunStatus(ContractEnum):
    """``huleedu.batch.v1.RunStatus``: the status of a pipeline run."""

    UNSPECIFIED = 0
    PENDING = 1
    RUNNING = 2
    COMPLETED = 3
    COMPLETED_WITH_FAILURES = 4
    FAILED = 5
    CANCELLED = 6

    @property
    def terminal(self) -> bool:
        """Whether the run has ended."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.COMPLETED_WITH_FAILURES,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
    }
)


class RunStepStatus(ContractEnum):
    """``huleedu.batch.v1.RunStepStatus``: the status of one step within a run."""

    UNSPECIFIED = 0
    PENDING = 1
    DISPATCHED = 2
    SATISFIED = 3
    UNSATISFIED = 4
    SKIPPED_DUE_TO_DEPENDENCY_FAILURE = 5
    SKIPPED_ALREADY_SATISFIED = 6
    CANCELLED = 7


class StepStatus(ContractEnum):
    """``huleedu.conductor.v1.StepStatus``: the lifecycle of one step of one batch."""

    UNSPECIFIED = 0
    WAITING = 1
    NOT_STARTED = 2
    IN_PROGRESS = 3
    SATISFIED = 4
    UNSATISFIED = 5
    BLOCKED = 6


class StepOutcome(ContractEnum):
    """``huleedu.events.v1.StepOutcome``: one essay's outcome of one step."""

    UNSPECIFIED = 0
    SUCCEEDED = 1
    FAILED = 2


class SkipReason(ContractEnum):
    """``huleedu.events.v1.SkipReason``: why a step was left out of a run."""

    UNSPECIFIED = 0
    ALREADY_SATISFIED = 1


class EssayView(ContractEnum):
    """``huleedu.batch.v1.EssayView``: how much of an essay a read returns."""

    UNSPECIFIED = 0
    BASIC = 1
    FULL = 2


class OutcomeVerdict(ContractEnum):
    """``huleedu.conductor.v1.OutcomeVerdict``: what recording an outcome did."""

    UNSPECIFIED = 0
    RECORDED = 1
    DUPLICATE = 2
    SUPERSEDED = 3
    LATE = 4
