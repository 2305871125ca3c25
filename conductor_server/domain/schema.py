"""The YAML schema of pipeline definitions, and its parser (field-level checks).

::

    pipelines:                        # mapping: pipeline name -> pipeline, in file order
      <name>:                         # [a-z][a-z0-9_]*
        description: str              # optional, default ""
        steps:                        # non-empty list
          - name: str                 # [a-z][a-z0-9_]*; the same name means the same step
            service: str              # the worker service (informational)
            command: str              # a command kind of the topic registry, e.g. "nlp"
            depends_on: [str]         # optional: steps of the same pipeline
            requires: [str]           # optional: batch flags, e.g. prompt_attached
            min_success_ratio: float  # optional, in (0, 1], default 1.0
            timeout_seconds: float    # optional, in (0, 604800] (7 days); absent: no timeout
            produces_text: bool       # optional, default false: its output is the essay's new text

Unknown keys are errors (a typo must not silently drop a dependency), and so are duplicate keys
(plain YAML keeps the last one). Checks across steps and pipelines live in ``validation``.
"""

from __future__ import annotations

import re
from collections.abc import Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from conductor_server.domain.errors import DefinitionIssue, IssueKind
from conductor_server.domain.model import PipelineDefinition, StepDefinition

NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_TOP_FIELDS = frozenset({"pipelines"})
_PIPELINE_FIELDS = frozenset({"description", "steps"})
_STEP_FIELDS = frozenset(
    {
        "name",
        "service",
        "command",
        "depends_on",
        "requires",
        "min_success_ratio",
        "timeout_seconds",
        "produces_text",
    }
)
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True, slots=True)
class ParsedPipeline:
    """A pipeline with the steps that parsed; ``declared`` names every step with a valid name."""

    definition: PipelineDefinition
    declared: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """What a definition file holds: the pipelines that parsed, the problems, every pipeline
    name in file order (parsed or not)."""

    pipelines: tuple[ParsedPipeline, ...]
    issues: tuple[DefinitionIssue, ...]
    pipeline_names: tuple[str, ...]


if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:  # the same safe loader, with libyaml's parser when it is installed
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):
    """A YAML safe loader that also records duplicate mapping keys (name, 1-based line)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[str, int]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                if key_node.value in seen:
                    self.duplicates.append((key_node.value, key_node.start_mark.line + 1))
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


class _Where:
    """Collects issues for one place of one file."""

    def __init__(self, issues: list[DefinitionIssue], file: str, pipeline: str = "") -> None:
        self.issues = issues
        self.file = file
        self.pipeline = pipeline
        self.step = ""

    def add(self, kind: IssueKind, detail: str, field: str = "", line: int = 0) -> None:
        issue = DefinitionIssue(
            kind, self.file, self.pipeline, self.step, detail, field=field, line=line
        )
        self.issues.append(issue)


def parse_document(text: str, source: str, commands: Set[str]) -> ParsedDocument:
    """The pipelines of a definition file, and every field-level problem found in it."""
    issues: list[DefinitionIssue] = []
    where = _Where(issues, source)
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        where.add(IssueKind.INVALID_YAML, f"not valid YAML: {exc}")
        return ParsedDocument((), tuple(issues), ())
    finally:
        loader.dispose()
    for key, line in loader.duplicates:
        where.add(IssueKind.DUPLICATE_KEY, f"key '{key}' appears more than once", line=line)
    if not isinstance(data, dict):
        where.add(IssueKind.INVALID_TYPE, "the document must be a mapping with 'pipelines'")
        return ParsedDocument((), tuple(issues), ())
    _unknown_fields(data, _TOP_FIELDS, where)
    raw_pipelines = data.get("pipelines")
    if not isinstance(raw_pipelines, dict):
        kind = IssueKind.MISSING_FIELD if raw_pipelines is None else IssueKind.INVALID_TYPE
        where.add(kind, "'pipelines' must be a mapping of pipeline names", field="pipelines")
        return ParsedDocument((), tuple(issues), ())
    if not raw_pipelines:
        where.add(IssueKind.NO_PIPELINES, "no pipeline is defined", field="pipelines")
    parsed = []
    for name, body in raw_pipelines.items():
        pipeline = _parse_pipeline(name, body, _Where(issues, source, str(name)), commands)
        if pipeline is not None:
            parsed.append(pipeline)
    names = tuple(str(name) for name in raw_pipelines)
    return ParsedDocument(tuple(parsed), tuple(issues), names)


def _unknown_fields(raw: dict[Any, Any], known: frozenset[str], where: _Where) -> None:
    for key in raw:
        if key not in known:
            allowed = ", ".join(sorted(known))
            where.add(IssueKind.UNKNOWN_FIELD, f"unknown field (allowed: {allowed})", str(key))


def _parse_pipeline(
    name: object, body: object, where: _Where, commands: Set[str]
) -> ParsedPipeline | None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        where.add(IssueKind.INVALID_NAME, f"pipeline name must match {NAME.pattern}")
        return None
    if not isinstance(body, dict):
        where.add(IssueKind.INVALID_TYPE, "a pipeline must be a mapping with 'steps'")
        return None
    _unknown_fields(body, _PIPELINE_FIELDS, where)
    description = body.get("description", "")
    if not isinstance(description, str):
        where.add(IssueKind.INVALID_TYPE, "must be a string", "description")
        description = ""
    raw_steps = body.get("steps")
    if not isinstance(raw_steps, list):
        kind = IssueKind.MISSING_FIELD if raw_steps is None else IssueKind.INVALID_TYPE
        where.add(kind, "must be a list of steps", "steps")
        return None
    if not raw_steps:
        where.add(IssueKind.EMPTY_PIPELINE, "the pipeline has no steps", "steps")
    steps: list[StepDefinition] = []
    declared: list[str] = []
    for position, raw in enumerate(raw_steps):
        step = _parse_step(raw, position, where, commands)
        if where.step and NAME.fullmatch(where.step):
            declared.append(where.step)
        if step is not None:
            steps.append(step)
        where.step = ""
    definition = PipelineDefinition(name, description, tuple(steps))
    return ParsedPipeline(definition, tuple(declared))


def _parse_step(
    raw: object, position: int, where: _Where, commands: Set[str]
) -> StepDefinition | None:
    """One step, or None when a field is wrong; leaves the step's label in ``where.step``."""
    where.step = f"steps[{position}]"
    if not isinstance(raw, dict):
        where.add(IssueKind.INVALID_TYPE, "a step must be a mapping")
        return None
    before = len(where.issues)
    name = raw.get("name")
    if isinstance(name, str) and NAME.fullmatch(name):
        where.step = name
    elif name is None:
        where.add(IssueKind.MISSING_FIELD, "a step needs a name", "name")
    else:
        where.add(IssueKind.INVALID_NAME, f"must be a string matching {NAME.pattern}", "name")
    _unknown_fields(raw, _STEP_FIELDS, where)
    service = _required_string(raw, "service", where)
    command = _required_string(raw, "command", where)
    if command and command not in commands:
        known = ", ".join(sorted(commands))
        where.add(IssueKind.UNKNOWN_COMMAND, f"unknown command '{command}' ({known})", "command")
    depends_on = _names(raw, "depends_on", where)
    requires = _names(raw, "requires", where)
    ratio = _ratio(raw, where)
    timeout = _timeout(raw, where)
    produces_text = raw.get("produces_text", False)
    if not isinstance(produces_text, bool):
        where.add(IssueKind.INVALID_TYPE, "must be true or false", "produces_text")
    if len(where.issues) != before:
        return None
    return StepDefinition(
        where.step, service, command, depends_on, requires, ratio, timeout, produces_text
    )


def _required_string(raw: dict[Any, Any], field: str, where: _Where) -> str:
    value = raw.get(field)
    if value is None:
        where.add(IssueKind.MISSING_FIELD, "required", field)
    elif not isinstance(value, str) or not value:
        where.add(IssueKind.INVALID_TYPE, "must be a non-empty string", field)
    else:
        return value
    return ""


def _names(raw: dict[Any, Any], field: str, where: _Where) -> tuple[str, ...]:
    value = raw.get(field)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        where.add(IssueKind.INVALID_TYPE, "must be a list of names", field)
        return ()
    for item in value:
        if not NAME.fullmatch(item):
            where.add(IssueKind.INVALID_NAME, f"'{item}' does not match {NAME.pattern}", field)
    repeated = sorted({item for item in value if value.count(item) > 1})
    if repeated:
        where.add(IssueKind.REPEATED_ENTRY, f"lists {', '.join(repeated)} more than once", field)
    return tuple(value)


def _ratio(raw: dict[Any, Any], where: _Where) -> float:
    value = raw.get("min_success_ratio")
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        where.add(IssueKind.INVALID_TYPE, "must be a number", "min_success_ratio")
        return 1.0
    if not 0 < value <= 1:  # also rejects NaN
        detail = f"{value} is outside (0, 1]"
        where.add(IssueKind.RATIO_OUT_OF_RANGE, detail, "min_success_ratio")
    return float(value)


def _timeout(raw: dict[Any, Any], where: _Where) -> float | None:
    value = raw.get("timeout_seconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        where.add(IssueKind.INVALID_TYPE, "must be a number of seconds", "timeout_seconds")
        return None
    if not 0 < value <= MAX_TIMEOUT_SECONDS:  # also rejects NaN and infinity
        detail = f"{value} is outside (0, {MAX_TIMEOUT_SECONDS}] (at most 7 days)"
        where.add(IssueKind.TIMEOUT_OUT_OF_RANGE, detail, "timeout_seconds")
    return float(value)
