"""Errors of the BatchService's domain, with typed attributes.

::

    BatchError                      retriable = False for every class below
    ├── NotFound                    .resource_type, .name
    │   ├── BatchNotFound           .batch_id: no such batch
    │   ├── RunNotFound             .batch_id, .run_id: no such run (or the batch has none)
    │   ├── EssayNotFound           .essay_id, .batch_id: no such essay (in the batch given)
    │   ├── ContentNotFound         .storage_id: no stored text under that id
    │   └── UnknownPipeline         .target: the conductor knows no pipeline or step so named
    ├── RunConflict                 .batch_id, .active_run_id: another run of the batch is active
    ├── RunFinished                 .run_id, .status: cancelling a run that ended otherwise
    ├── RunNotFinished              .run_id: retrying a run that is still active
    ├── NothingToRetry              .run_id, .steps: no step (of those named) to run again
    ├── RequestIdReused             .request_id, .field: the key was used for a different request
    ├── UnknownFlag                 .flags: name -> why, flags no loaded pipeline uses
    ├── PipelineRejected            .target, .violations: the conductor refused to resolve it
    ├── UnknownCommand              .step, .command: a step's command has no topic
    ├── InvalidCompletion           .reason: a BatchStepCompleted fact that breaks the contract
    └── ConductorFailed             .code, .message: the conductor answered something unexpected

The gRPC layer maps each to a status code in one table (``batch_server.api.status``); the Kafka
consumer dead-letters them (permanent). Backends that are down raise
``mesh.errors.BackendUnavailable`` (retriable) from the adapters, not from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar


class BatchError(Exception):
    """Base of every error of the BatchService's domain."""

    retriable: ClassVar[bool] = False


class NotFound(BatchError):
    """A named resource does not exist."""

    resource_type: ClassVar[str] = "resource"

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(message)


class BatchNotFound(NotFound):
    resource_type = "batch"

    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        super().__init__(batch_id, f"unknown batch '{batch_id}'")


class RunNotFound(NotFound):
    resource_type = "pipeline_run"

    def __init__(self, batch_id: str, run_id: str = "") -> None:
        self.batch_id = batch_id
        self.run_id = run_id
        message = (
            f"batch '{batch_id}' has no run '{run_id}'"
            if run_id
            else f"batch '{batch_id}' has no pipeline run"
        )
        super().__init__(run_id or batch_id, message)


class EssayNotFound(NotFound):
    resource_type = "essay"

    def __init__(self, essay_id: str, batch_id: str = "") -> None:
        self.essay_id = essay_id
        self.batch_id = batch_id
        message = (
            f"batch '{batch_id}' has no essay '{essay_id}'"
            if batch_id
            else f"unknown essay '{essay_id}'"
        )
        super().__init__(essay_id, message)


class ContentNotFound(NotFound):
    resource_type = "content"

    def __init__(self, storage_id: str) -> None:
        self.storage_id = storage_id
        super().__init__(storage_id, f"no content stored under '{storage_id}'")


class RunConflict(BatchError):
    """A batch has at most one active (pending or running) run; this is the one it has."""

    def __init__(self, batch_id: str, active_run_id: str) -> None:
        self.batch_id = batch_id
        self.active_run_id = active_run_id
        super().__init__(
            f"batch '{batch_id}' already has an active run '{active_run_id}'; "
            "watch it (WatchBatch) and start the next pipeline when it has ended"
        )


class RunFinished(BatchError):
    """CancelRun of a run that already ended (other than cancelled)."""

    def __init__(self, run_id: str, status: str) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(f"run '{run_id}' already ended {status}; nothing to cancel")


class RunNotFinished(BatchError):
    """RetryRun of a run that is still pending or running."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"run '{run_id}' is still active; cancel it (CancelRun) or wait for it to end"
        )


class NothingToRetry(BatchError):
    """RetryRun found no step with an essay to run again."""

    def __init__(self, run_id: str, steps: Sequence[str] = ()) -> None:
        self.run_id = run_id
        self.steps = tuple(steps)
        among = f" among {', '.join(self.steps)}" if self.steps else ""
        super().__init__(
            f"run '{run_id}' has no failed, cancelled or unfinished step{among} to retry"
        )


class RequestIdReused(BatchError):
    """An idempotency key came back with a different request."""

    def __init__(self, request_id: str, detail: str) -> None:
        self.request_id = request_id
        self.field = "request_id"
        self.detail = detail
        super().__init__(f"request_id '{request_id}' was already used for {detail}")


class UnknownFlag(BatchError):
    """The conductor refused flags that no step of its pipelines requires; ``flags`` maps each
    to the conductor's description (which names the known flags)."""

    def __init__(self, flags: Mapping[str, str]) -> None:
        self.flags = dict(flags)
        super().__init__("; ".join(self.flags.values()))


@dataclass(frozen=True, slots=True)
class Precondition:
    """One unmet precondition as the conductor reported it (``kind`` is e.g. ``FLAG``)."""

    kind: str
    subject: str
    description: str


class PipelineRejected(BatchError):
    """The conductor refused to resolve ``target`` for the batch (unmet flags or steps)."""

    def __init__(self, target: str, message: str, violations: Sequence[Precondition]) -> None:
        self.target = target
        self.violations = tuple(violations)
        super().__init__(message or f"pipeline '{target}' cannot run")


class UnknownPipeline(NotFound):
    resource_type = "pipeline"

    def __init__(self, target: str) -> None:
        self.target = target
        super().__init__(target, f"unknown pipeline or step '{target}'")


class UnknownCommand(BatchError):
    """A resolved step names a command with no command topic: a definitions/registry mismatch."""

    def __init__(self, step: str, command: str) -> None:
        self.step = step
        self.command = command
        super().__init__(f"step '{step}' has command '{command}', which has no command topic")


class InvalidCompletion(BatchError):
    """A step-completion fact breaks the contract (counts that do not add up, no batch id)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid BatchStepCompleted: {reason}")


class ConductorFailed(BatchError):
    """The conductor answered with a status this service has no meaning for."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"conductor failed: {code}: {message}")
