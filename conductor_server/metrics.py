"""Metrics of the PipelineConductor's definitions and resolution, over an injected registry.

The names are the seed's (``bcs_...``); ``prometheus_client`` appends ``_total`` to counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class ConductorMetrics:
    """The seed's counters: definition loads and resolutions (rules)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.config_load_success = Counter(
            "bcs_pipeline_config_load_success",
            "Pipeline definition files loaded and validated.",
            registry=registry,
        )
        self.config_load_error = Counter(
            "bcs_pipeline_config_load_error",
            "Pipeline definition files rejected (unreadable or invalid).",
            registry=registry,
        )
        self.rules_success = Counter(
            "bcs_pipeline_rules_success",
            "Targets resolved into steps to run (including empty results).",
            registry=registry,
        )
        self.rules_error = Counter(
            "bcs_pipeline_rules_error",
            "Resolutions refused: unknown target or unmet precondition.",
            registry=registry,
        )
        self.rules_pruned = Counter(
            "bcs_pipeline_rules_pruned",
            "Steps pruned from resolutions because the batch already satisfied them.",
            registry=registry,
        )
