"""Metrics of the PipelineConductor's definitions and resolution, over an injected registry.

The names are the seed's (``bcs_...``); ``prometheus_client`` appends ``_total`` to counters.
``conductor_step_completion_seconds`` is the conductor's share of a step transition: from the
record timestamp of a step's last outcome to the commit of its completion.
``conductor_kept_tallies_total{result}`` counts, per batch a write of outcomes locks, whether it
counted on the tally this process kept (``used``) or read the batch from PostgreSQL (``read``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

TRANSITION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class ConductorMetrics:
    """The seed's counters (definition loads and resolutions) and step completion latency."""

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
        self.step_completion = Histogram(
            "conductor_step_completion_seconds",
            "From the record timestamp of a step's last outcome to the commit of its completion.",
            ["step"],
            buckets=TRANSITION_BUCKETS,
            registry=registry,
        )
        self.kept_tallies = Counter(
            "conductor_kept_tallies",
            "Batches locked by a write of outcomes: counted on the tally kept in this process "
            "(result=used) or read from PostgreSQL (result=read).",
            ["result"],
            registry=registry,
        )
