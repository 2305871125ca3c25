"""The conductor's pipeline rules: the loaded catalog, resolution, and their metrics.

The application layer over the pure domain: it reads the definition file, passes the topic
registry's command names to the loader, and counts loads and resolutions. The gRPC servicer and
the Kafka consumer call this, not the domain functions directly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Set
from importlib.resources.abc import Traversable
from pathlib import Path

from conductor_server.domain.catalog import PipelineCatalog, Subgraph
from conductor_server.domain.errors import (
    ConductorError,
    DefinitionError,
    DefinitionIssue,
    IssueKind,
)
from conductor_server.domain.loader import parse_catalog
from conductor_server.domain.model import StepDefinition, StepState
from conductor_server.domain.resolution import Resolution, check_prerequisites, resolve_subgraph
from conductor_server.metrics import ConductorMetrics
from mesh.events.topics import COMMAND_KINDS
from pipelines import default_definitions

log = logging.getLogger(__name__)

DefinitionSource = Path | Traversable


def definitions_at(path: str) -> DefinitionSource:
    """The definition file at ``path``, or the shipped one when ``path`` is empty."""
    return Path(path) if path else default_definitions()


def load_catalog(
    source: DefinitionSource,
    metrics: ConductorMetrics,
    commands: Set[str] = frozenset(COMMAND_KINDS),
) -> PipelineCatalog:
    """Read and validate ``source``; ``DefinitionError`` (every problem) if unreadable or bad."""
    name = str(source)
    try:
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            issue = DefinitionIssue(IssueKind.UNREADABLE_FILE, name, "", "", str(exc))
            raise DefinitionError((issue,)) from exc
        catalog = parse_catalog(text, name, commands)
    except DefinitionError:
        metrics.config_load_error.inc()
        raise
    metrics.config_load_success.inc()
    log.info(
        "loaded %d pipelines (%d steps) from %s, version %s",
        len(catalog.pipelines),
        len(catalog.steps),
        name,
        catalog.version[:12],
    )
    return catalog


class PipelineRules:
    """The current catalog, and the resolutions made against it (counted)."""

    def __init__(self, catalog: PipelineCatalog, metrics: ConductorMetrics) -> None:
        self._catalog = catalog
        self._metrics = metrics
        # target -> its subgraph in the current catalog; at most one per pipeline and step
        self._subgraphs: dict[str, Subgraph] = {}

    @classmethod
    def load(cls, source: DefinitionSource, metrics: ConductorMetrics) -> PipelineRules:
        """Rules over the catalog in ``source``; ``DefinitionError`` fails start-up."""
        return cls(load_catalog(source, metrics), metrics)

    @property
    def catalog(self) -> PipelineCatalog:
        return self._catalog

    def reload(self, source: DefinitionSource) -> PipelineCatalog:
        """Swap in the catalog of ``source``; on ``DefinitionError`` the current one stays.

        Runs already started keep the steps and version they resolved with.
        """
        catalog = load_catalog(source, self._metrics)
        self._catalog, self._subgraphs = catalog, {}
        return catalog

    def resolve(self, target: str, states: Mapping[str, StepState], flags: Set[str]) -> Resolution:
        """``resolution.resolve`` against the current catalog, counted.

        Each target's subgraph is taken from the catalog once and kept until the next reload.
        """
        try:
            subgraph = self._subgraphs.get(target)
            if subgraph is None:
                subgraph = self._subgraphs[target] = self._catalog.subgraph(target)
            resolution = resolve_subgraph(subgraph, target, states, flags)
        except ConductorError:
            self._metrics.rules_error.inc()
            raise
        self._metrics.rules_success.inc()
        if resolution.pruned:
            self._metrics.rules_pruned.inc(len(resolution.pruned))
        return resolution

    def check_prerequisites(
        self, step: str, states: Mapping[str, StepState], flags: Set[str]
    ) -> StepDefinition:
        """``resolution.check_prerequisites`` against the current catalog."""
        return check_prerequisites(self._catalog, step, states, flags)
