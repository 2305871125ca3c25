"""Errors of the conductor's domain, and the typed records they carry.

::

    ConductorError                  retriable = False for every class below
    ├── DefinitionError             .issues: tuple[DefinitionIssue, ...] (every problem of a file)
    ├── NotFound                    .resource_type, .name
    │   ├── UnknownPipeline         no pipeline of that name
    │   ├── UnknownStep             no step of that name
    │   └── UnknownTarget           neither a pipeline nor a step
    ├── UnknownFlag                 .unknown, .known: flag names no step requires, and those
    │                               some step does
    └── PreconditionFailed          .target, .violations: tuple[Violation, ...]

The gRPC layer maps these to status codes in one table (``DefinitionError`` is a start-up failure;
``NotFound`` is NOT_FOUND with a ``ResourceInfo``; ``UnknownFlag`` is INVALID_ARGUMENT with one
``BadRequest`` violation per unknown flag; ``PreconditionFailed`` is FAILED_PRECONDITION with one
``PreconditionFailure`` violation per ``Violation``). The retry policy reads ``retriable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar


class IssueKind(StrEnum):
    """What is wrong with a pipeline definition file."""

    UNREADABLE_FILE = "unreadable_file"
    INVALID_YAML = "invalid_yaml"
    DUPLICATE_KEY = "duplicate_key"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_TYPE = "invalid_type"
    INVALID_NAME = "invalid_name"
    REPEATED_ENTRY = "repeated_entry"
    UNKNOWN_COMMAND = "unknown_command"
    RATIO_OUT_OF_RANGE = "ratio_out_of_range"
    TIMEOUT_OUT_OF_RANGE = "timeout_out_of_range"
    NO_PIPELINES = "no_pipelines"
    EMPTY_PIPELINE = "empty_pipeline"
    DUPLICATE_STEP = "duplicate_step"
    UNKNOWN_DEPENDENCY = "unknown_dependency"
    CYCLE = "cycle"
    CONFLICTING_STEP = "conflicting_step"
    AMBIGUOUS_TARGET = "ambiguous_target"


@dataclass(frozen=True, slots=True)
class DefinitionIssue:
    """One problem of a definition file. ``pipeline``/``step`` are empty when not applicable.

    ``cycle`` is the dependency path of a ``CYCLE`` issue, each step depending on the next, the
    last equal to the first (``("a", "b", "a")``). ``line`` is 1-based, 0 when unknown.
    """

    kind: IssueKind
    file: str
    pipeline: str
    step: str
    detail: str
    field: str = ""
    cycle: tuple[str, ...] = ()
    line: int = 0

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        if self.pipeline:
            where += f": pipeline '{self.pipeline}'"
        if self.step:
            where += f", step '{self.step}'"
        if self.field:
            where += f", field '{self.field}'"
        return f"{where}: {self.detail}"


class ViolationKind(StrEnum):
    """What a precondition is about (the ``type`` of a gRPC ``PreconditionFailure`` violation)."""

    FLAG = "FLAG"  # a batch flag a step requires is not set
    STEP = "STEP"  # a step a step depends on is not satisfied


@dataclass(frozen=True, slots=True)
class Violation:
    """One unmet precondition: a flag or a step (``subject``), and why (``description``)."""

    kind: ViolationKind
    subject: str
    description: str
    required_by: tuple[str, ...] = ()


class ConductorError(Exception):
    """Base of every error of the conductor's domain."""

    retriable: ClassVar[bool] = False


class DefinitionError(ConductorError):
    """A pipeline definition file is invalid; ``issues`` lists every problem found, in order."""

    def __init__(self, issues: tuple[DefinitionIssue, ...]) -> None:
        self.issues = issues
        lines = "\n".join(f"  - {issue}" for issue in issues)
        super().__init__(f"{len(issues)} problem(s) in pipeline definitions:\n{lines}")


class NotFound(ConductorError):
    """A named resource does not exist."""

    resource_type: ClassVar[str] = "resource"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown {self.resource_type} '{name}'")


class UnknownPipeline(NotFound):
    """No pipeline has this name."""

    resource_type = "pipeline"


class UnknownStep(NotFound):
    """No step has this name."""

    resource_type = "step"


class UnknownTarget(NotFound):
    """The name is neither a pipeline nor a step."""

    resource_type = "pipeline or step"


class UnknownFlag(ConductorError):
    """Flag names that no step of the loaded pipelines requires (``unknown``, sorted), so no
    batch can mean anything by them: most likely a typo of one of ``known``."""

    def __init__(self, unknown: tuple[str, ...], known: tuple[str, ...]) -> None:
        self.unknown = unknown
        self.known = known
        super().__init__("; ".join(self.description(name) for name in unknown))

    def description(self, name: str) -> str:
        """Why ``name`` is refused, naming the flags that are known."""
        return f"unknown flag '{name}'; known flags: {', '.join(self.known) or 'none'}"


class PreconditionFailed(ConductorError):
    """``target`` cannot run: every unmet flag and unsatisfied step is one of ``violations``."""

    def __init__(self, target: str, violations: tuple[Violation, ...]) -> None:
        self.target = target
        self.violations = violations
        unmet = "; ".join(v.description for v in violations)
        super().__init__(f"'{target}' cannot run: {unmet}")
