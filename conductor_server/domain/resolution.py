"""Resolution: which steps a target still needs for a batch, in which order, and may they run.

- The target is a pipeline name or a step name (every step is a target); anything else is
  ``UnknownTarget``.
- Order: the target's dependency subgraph in stable topological order, ties broken by
  declaration order (see ``catalog.PipelineCatalog.subgraph``).
- Pruning: steps the batch already SATISFIED are dropped (order kept) and reported as pruned.
  Only SATISFIED prunes: an in-progress or unknown step is kept.
- A step the batch completed UNSATISFIED cannot run again: outcomes count once per batch, step
  and essay, so a second run of it would never complete (and its dependants never start).
  Resolving a target that needs one is ``PreconditionFailed`` with a ``STEP`` violation naming
  it; the remedy is a new batch.
- Gates are checked for the steps that would actually run, not for pruned ones: a batch that
  already has NLP results does not need a prompt to run a later step that needs none. Every unmet
  flag is reported at once (``PreconditionFailed``).
- A fully satisfied batch resolves to no steps; that is an answer, not an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from enum import StrEnum

from conductor_server.domain.catalog import PipelineCatalog, Subgraph
from conductor_server.domain.errors import PreconditionFailed, Violation, ViolationKind
from conductor_server.domain.model import StepDefinition, StepState, StepStatus


class PruneReason(StrEnum):
    """Why a step was left out of a resolution."""

    ALREADY_SATISFIED = "already_satisfied"


@dataclass(frozen=True, slots=True)
class PrunedStep:
    step: StepDefinition
    reason: PruneReason


@dataclass(frozen=True, slots=True)
class Resolution:
    """The steps ``target`` still needs (in order), those pruned, and the definitions' version.

    ``version`` hashes the target's whole subgraph (pruned steps included): pin it for the run.
    """

    target: str
    steps: tuple[StepDefinition, ...]
    pruned: tuple[PrunedStep, ...]
    version: str


def resolve(
    catalog: PipelineCatalog,
    target: str,
    states: Mapping[str, StepState],
    flags: Set[str],
) -> Resolution:
    """Resolve ``target`` for a batch with step ``states`` and the set ``flags``.

    Raises ``UnknownTarget`` or ``PreconditionFailed`` (one ``FLAG`` violation per unmet flag).
    """
    return resolve_subgraph(catalog.subgraph(target), target, states, flags)


def resolve_subgraph(
    subgraph: Subgraph, target: str, states: Mapping[str, StepState], flags: Set[str]
) -> Resolution:
    """``resolve`` with ``target``'s subgraph already taken from the catalog (callers that
    resolve the same targets again and again keep the subgraphs: a catalog never changes)."""
    satisfied: set[str] = set()
    final: dict[str, StepState] = {}  # completed unsatisfied: cannot run again
    for name, state in states.items():
        if state.status == StepStatus.SATISFIED:
            satisfied.add(name)
        elif state.status == StepStatus.UNSATISFIED:
            final[name] = state
    to_run, gated = subgraph.steps, subgraph.gated
    pruned: tuple[PrunedStep, ...] = ()
    if satisfied:
        to_run = tuple(step for step in to_run if step.name not in satisfied)
        gated = tuple(step for step in gated if step.name not in satisfied)
        pruned = tuple(
            PrunedStep(step, PruneReason.ALREADY_SATISFIED)
            for step in subgraph.steps
            if step.name in satisfied
        )
    violations = unmet_flags(gated, flags)
    if final:
        violations = (*_completed_unsatisfied(to_run, final, target), *violations)
    if violations:
        raise PreconditionFailed(target, violations)
    return Resolution(target, to_run, pruned, subgraph.version)


def _completed_unsatisfied(
    to_run: Iterable[StepDefinition], final: Mapping[str, StepState], target: str
) -> tuple[Violation, ...]:
    """One ``STEP`` violation per step to run that the batch completed unsatisfied, in order."""
    return tuple(
        Violation(
            ViolationKind.STEP,
            step.name,
            f"step '{step.name}' completed unsatisfied ({final[step.name].succeeded} of "
            f"{final[step.name].total} essays succeeded) and cannot run again for this batch; "
            "use a new batch to retry",
            (target,),
        )
        for step in to_run
        if step.name in final
    )


def check_prerequisites(
    catalog: PipelineCatalog,
    step_name: str,
    states: Mapping[str, StepState],
    flags: Set[str],
) -> StepDefinition:
    """The step, when it may run now: every dependency SATISFIED and every required flag set.

    Raises ``UnknownStep``, or ``PreconditionFailed`` naming every unsatisfied dependency
    (``STEP`` violations, in ``depends_on`` order) and every unmet flag (``FLAG``).
    """
    step = catalog.step(step_name)
    violations: list[Violation] = []
    for dep in step.depends_on:
        state = states.get(dep)
        status = state.status if state is not None else StepStatus.NOT_STARTED
        if status != StepStatus.SATISFIED:
            description = f"step '{dep}' is {status.value}, not satisfied"
            violations.append(Violation(ViolationKind.STEP, dep, description, (step.name,)))
    violations += unmet_flags([step], flags)
    if violations:
        raise PreconditionFailed(step.name, tuple(violations))
    return step


def unmet_flags(steps: Iterable[StepDefinition], flags: Set[str]) -> tuple[Violation, ...]:
    """One violation per flag some of ``steps`` require but ``flags`` lacks, in first-need order."""
    needed_by: dict[str, list[str]] = {}
    for step in steps:
        for flag in step.requires:
            if flag not in flags:
                needed_by.setdefault(flag, []).append(step.name)
    return tuple(
        Violation(
            ViolationKind.FLAG,
            flag,
            f"batch flag '{flag}' is not set (required by {', '.join(names)})",
            tuple(names),
        )
        for flag, names in needed_by.items()
    )
