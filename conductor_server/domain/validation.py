"""Checks across steps and pipelines, run on what ``schema`` parsed.

- a step declared twice in one pipeline;
- a dependency that is not a step of the same pipeline (pipelines are self-contained);
- dependency cycles, each reported with its path;
- one step name defined differently in two pipelines (compared normalized, see ``catalog``);
- a pipeline named like a step that does not mean the same as that step as a target (the
  pipeline would hide the step: every step name must stay a usable target).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from conductor_server.domain.catalog import normalized
from conductor_server.domain.errors import DefinitionIssue, IssueKind
from conductor_server.domain.graph import StepGraph
from conductor_server.domain.model import PipelineDefinition, StepDefinition
from conductor_server.domain.schema import ParsedPipeline


def check_pipelines(parsed: Sequence[ParsedPipeline], source: str) -> list[DefinitionIssue]:
    """Every cross-step problem of ``parsed``, in file order."""
    issues: list[DefinitionIssue] = []
    first: dict[str, tuple[str, StepDefinition]] = {}  # step name -> (pipeline, definition)
    for pipeline in parsed:
        issues += _check_steps(pipeline, source)
        issues += _check_cycles(pipeline.definition, source)
        issues += _check_conflicts(pipeline.definition, first, source)
    table = {name: definition for name, (_, definition) in first.items()}
    issues += _check_targets(parsed, table, source)
    return issues


def _unique_steps(pipeline: PipelineDefinition) -> dict[str, StepDefinition]:
    steps: dict[str, StepDefinition] = {}
    for step in pipeline.steps:
        steps.setdefault(step.name, step)
    return steps


def _check_steps(parsed: ParsedPipeline, source: str) -> list[DefinitionIssue]:
    pipeline = parsed.definition.name
    issues = []
    seen: set[str] = set()
    for name in parsed.declared:
        if name in seen:
            detail = "declared more than once in this pipeline"
            issues.append(DefinitionIssue(IssueKind.DUPLICATE_STEP, source, pipeline, name, detail))
        seen.add(name)
    for step in parsed.definition.steps:
        for dep in step.depends_on:
            if dep not in seen:
                detail = f"depends on '{dep}', which is not a step of this pipeline"
                kind = IssueKind.UNKNOWN_DEPENDENCY
                issues.append(
                    DefinitionIssue(kind, source, pipeline, step.name, detail, "depends_on")
                )
    return issues


def _check_cycles(pipeline: PipelineDefinition, source: str) -> list[DefinitionIssue]:
    steps = list(_unique_steps(pipeline).values())
    index = {step.name: position for position, step in enumerate(steps)}
    deps = [[index[dep] for dep in step.depends_on if dep in index] for step in steps]
    graph = StepGraph.from_dependencies(deps)
    ordered = graph.order(range(len(steps)))
    if len(ordered) == len(steps):
        return []
    left = set(range(len(steps))).difference(ordered)
    issues = []
    for cycle in graph.cycles(left):
        path = tuple(steps[node].name for node in cycle)
        detail = f"dependency cycle: {' → '.join(path)} (each step depends on the next)"
        issues.append(
            DefinitionIssue(
                IssueKind.CYCLE, source, pipeline.name, path[0], detail, "depends_on", path
            )
        )
    return issues


def _check_conflicts(
    pipeline: PipelineDefinition, first: dict[str, tuple[str, StepDefinition]], source: str
) -> list[DefinitionIssue]:
    issues = []
    for step in _unique_steps(pipeline).values():
        if step.name not in first:
            first[step.name] = (pipeline.name, step)
            continue
        other_pipeline, other = first[step.name]
        mine, theirs = normalized(step), normalized(other)
        differing = [key for key in mine if mine[key] != theirs[key]]
        if differing:
            detail = (
                f"defined differently in pipeline '{other_pipeline}' "
                f"(differs in {', '.join(differing)}); a step name means one step everywhere"
            )
            kind = IssueKind.CONFLICTING_STEP
            issues.append(
                DefinitionIssue(kind, source, pipeline.name, step.name, detail, differing[0])
            )
    return issues


def _check_targets(
    parsed: Sequence[ParsedPipeline], table: Mapping[str, StepDefinition], source: str
) -> list[DefinitionIssue]:
    issues = []
    for pipeline in parsed:
        name = pipeline.definition.name
        if name not in table:
            continue
        closure = _closure(name, table)
        if set(pipeline.declared) != closure:
            detail = (
                f"the pipeline is named like step '{name}' but runs different steps "
                f"({', '.join(sorted(set(pipeline.declared)))} instead of the step's "
                f"{', '.join(sorted(closure))}), hiding the step as a target"
            )
            issues.append(DefinitionIssue(IssueKind.AMBIGUOUS_TARGET, source, name, name, detail))
    return issues


def _closure(name: str, table: Mapping[str, StepDefinition]) -> set[str]:
    found: set[str] = set()
    stack = [name]
    while stack:
        current = stack.pop()
        if current in found or current not in table:
            continue
        found.add(current)
        stack.extend(table[current].depends_on)
    return found
