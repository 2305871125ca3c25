"""The loaded pipeline definitions: pipelines in file order, one global step table, versions.

Order. A target resolves to its dependency subgraph in the *lexicographically smallest*
topological order by declaration index (ties go to the step declared first). That order has a
useful property: restricted to a set of steps closed under dependencies, the order of the whole
step table is the order of the set (the greedy sort picks a step of the set exactly when it is
the set's smallest ready step, because nothing outside the set can make one of its steps ready).
So the table is sorted once, at load, with ``StepGraph.order``; a resolution only collects the
target's closure and reads it off in that global order, in linear time.

Versions are sha256 digests of canonical JSON (sorted keys, no spaces) of *normalized* steps:
every field, with ``depends_on`` and ``requires`` sorted (their order means nothing), listed in
resolved order. A pipeline's version changes exactly when what it runs, or the order it runs it
in, changes; descriptions are prose and are not hashed. The catalog's version hashes the map of
pipeline name to pipeline version. A resolution of a pipeline target carries that pipeline's
version (computed at load); a step target's version is computed when it is resolved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from types import MappingProxyType

from conductor_server.domain.errors import UnknownFlag, UnknownPipeline, UnknownStep, UnknownTarget
from conductor_server.domain.graph import StepGraph
from conductor_server.domain.model import PipelineDefinition, StepDefinition


def normalized(step: StepDefinition) -> dict[str, object]:
    """``step`` as a plain value whose equality is equality of meaning."""
    return {
        "name": step.name,
        "service": step.service,
        "command": step.command,
        "depends_on": sorted(step.depends_on),
        "requires": sorted(step.requires),
        "min_success_ratio": float(step.min_success_ratio),
        "timeout_seconds": None if step.timeout_seconds is None else float(step.timeout_seconds),
        "produces_text": step.produces_text,
    }


def canonical_json(value: object) -> str:
    """The one JSON spelling of ``value`` that versions are computed from."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest(canonical_steps: Iterable[bytes]) -> str:
    """sha256 (hex) of the canonical JSON list of steps already in canonical JSON (UTF-8)."""
    return hashlib.sha256(b"[" + b",".join(canonical_steps) + b"]").hexdigest()


@dataclass(frozen=True, slots=True)
class Subgraph:
    """The steps a target needs, dependencies first, and the version of their definitions.

    ``gated`` are those of ``steps`` that require batch flags (in the same order).
    """

    steps: tuple[StepDefinition, ...]
    version: str
    gated: tuple[StepDefinition, ...] = ()


@dataclass(frozen=True, slots=True)
class PipelineCatalog:
    """Validated pipeline definitions; build it with ``loader.parse_catalog``.

    ``steps`` is the global step table in declaration order (the order steps first appear in the
    file); ``flags`` every flag some step requires, sorted: the flag names a batch may use;
    ``pipeline_versions`` maps each pipeline to its version; ``version`` covers them all.
    """

    source: str
    pipelines: tuple[PipelineDefinition, ...]
    steps: Mapping[str, StepDefinition] = field(init=False)
    flags: tuple[str, ...] = field(init=False)
    pipeline_versions: Mapping[str, str] = field(init=False)
    version: str = field(init=False)
    _by_name: Mapping[str, PipelineDefinition] = field(init=False, repr=False, compare=False)
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)
    _roots: Mapping[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    _graph: StepGraph = field(init=False, repr=False, compare=False)
    # Nodes are declaration indices; positions are places in the global order. Per position:
    # the step, its canonical JSON (built in position order, so a closure reads it in sequence).
    _rank: tuple[int, ...] = field(init=False, repr=False, compare=False)  # node -> position
    _sorted: tuple[StepDefinition, ...] = field(init=False, repr=False, compare=False)
    _canonical: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _gated: frozenset[int] = field(init=False, repr=False, compare=False)  # positions

    def __post_init__(self) -> None:
        table: dict[str, StepDefinition] = {}
        for pipeline in self.pipelines:
            for step in pipeline.steps:
                table.setdefault(step.name, step)
        index = {name: position for position, name in enumerate(table)}
        try:
            deps = [tuple(index[dep] for dep in step.depends_on) for step in table.values()]
        except KeyError as exc:
            raise ValueError(f"unknown dependency {exc}: validate with parse_catalog") from exc
        graph = StepGraph.from_dependencies(deps)
        order = graph.order(range(len(table)))
        if len(order) != len(table):
            raise ValueError("dependency cycle: validate with parse_catalog")
        rank = [0] * len(order)
        for position, node in enumerate(order):
            rank[node] = position
        roots = {p.name: tuple({index[s.name]: None for s in p.steps}) for p in self.pipelines}
        set_ = object.__setattr__
        set_(self, "steps", MappingProxyType(table))
        set_(self, "flags", tuple(sorted({flag for s in table.values() for flag in s.requires})))
        set_(self, "_by_name", MappingProxyType({p.name: p for p in self.pipelines}))
        set_(self, "_index", MappingProxyType(index))
        set_(self, "_roots", MappingProxyType(roots))
        set_(self, "_graph", graph)
        steps = tuple(table.values())
        in_order = tuple(steps[node] for node in order)
        set_(self, "_rank", tuple(rank))
        set_(self, "_sorted", in_order)
        set_(self, "_canonical", tuple(canonical_json(normalized(s)).encode() for s in in_order))
        set_(self, "_gated", frozenset(p for p, step in enumerate(in_order) if step.requires))
        versions = {p.name: self._digest(self._positions(p.name)) for p in self.pipelines}
        set_(self, "pipeline_versions", MappingProxyType(versions))
        set_(self, "version", hashlib.sha256(canonical_json(versions).encode()).hexdigest())

    def pipeline(self, name: str) -> PipelineDefinition:
        """The pipeline called ``name``; ``UnknownPipeline`` if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownPipeline(name) from None

    def step(self, name: str) -> StepDefinition:
        """The step called ``name``; ``UnknownStep`` if there is none."""
        try:
            return self.steps[name]
        except KeyError:
            raise UnknownStep(name) from None

    def check_flags(self, names: Iterable[str]) -> None:
        """``UnknownFlag`` unless every name is one of ``flags``."""
        unknown = sorted(set(names).difference(self.flags))
        if unknown:
            raise UnknownFlag(tuple(unknown), self.flags)

    def subgraph(self, target: str) -> Subgraph:
        """What ``target`` (a pipeline name, else a step name) needs, in stable topological order.

        For a pipeline: its steps and everything they depend on; for a step: the step and its
        dependency closure. Ties are broken by declaration order. ``UnknownTarget`` otherwise.
        """
        positions = self._positions(target)
        version = self.pipeline_versions.get(target)
        step_at = self._sorted.__getitem__  # (map and filter: these loops run in C)
        return Subgraph(
            steps=tuple(map(step_at, positions)),
            version=version if version is not None else self._digest(positions),
            gated=tuple(map(step_at, filter(self._gated.__contains__, positions))),
        )

    def _positions(self, target: str) -> list[int]:
        """The positions of ``target``'s closure in the global order, ascending: its order."""
        nodes: Sequence[int] | None = self._roots.get(target)
        if nodes is None:  # (a pipeline is closed under dependencies: the loader checks it)
            if target not in self._index:
                raise UnknownTarget(target)
            nodes = self._graph.closure([self._index[target]])
        rank = self._rank
        selected = bytearray(len(rank))
        for node in nodes:
            selected[rank[node]] = 1
        return list(compress(range(len(selected)), selected))

    def _digest(self, positions: Sequence[int]) -> str:
        return digest(map(self._canonical.__getitem__, positions))
