"""Metrics of the BatchService's runs, declared once over an injected registry.

- ``batch_step_transition_seconds{step}``: the BatchService's share of a step transition, from
  the event timestamp of a ``BatchStepCompleted`` (the conductor's commit of the completion) to
  the commit of the next steps' dispatch; ``step`` is the step that completed.
- ``batch_run_duration_seconds{pipeline,status}``: from a run's start to its end, observed when
  it ends.
- ``batch_active_runs`` and ``batch_oldest_active_run_age_seconds``: runs pending or running,
  and how long the oldest has been (refreshed by ``RunMonitor``; every replica reports the
  same database, so aggregate with ``max``).
- ``batch_steps_timed_out_total{step}``: dispatched steps whose deadline passed and that the
  conductor timed out (``DeadlineWatch``).
- ``batch_kept_progress_total{result}``: per batch a unit of progress (a completion, a
  StartPipeline, a cancel or a retry) locks, whether it advanced on the progress this process
  kept (``used``) or read the batch from PostgreSQL (``read``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from batch_server.domain.model import RunSummary

TRANSITION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
RUN_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


class BatchMetrics:
    """Transition latency, run durations and the active runs of the BatchService."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.step_transition = Histogram(
            "batch_step_transition_seconds",
            "From a BatchStepCompleted's event timestamp to the commit of the next dispatch.",
            ["step"],
            buckets=TRANSITION_BUCKETS,
            registry=registry,
        )
        self.run_duration = Histogram(
            "batch_run_duration_seconds",
            "Duration of finished pipeline runs, from start to end.",
            ["pipeline", "status"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.active_runs = Gauge(
            "batch_active_runs",
            "Pipeline runs pending or running (all replicas: one database).",
            registry=registry,
        )
        self.oldest_active_run = Gauge(
            "batch_oldest_active_run_age_seconds",
            "Age of the oldest pending or running pipeline run (0 when there is none).",
            registry=registry,
        )
        self.steps_timed_out = Counter(
            "batch_steps_timed_out_total",
            "Dispatched steps whose deadline passed and that the conductor timed out.",
            ["step"],
            registry=registry,
        )
        self.kept_progress = Counter(
            "batch_kept_progress",
            "Batches locked by a unit of progress: advanced on the progress kept in this process "
            "(result=used) or read from PostgreSQL (result=read).",
            ["result"],
            registry=registry,
        )

    def run_ended(self, summary: RunSummary) -> None:
        run = summary.run
        self.run_duration.labels(run.pipeline, run.status.value).observe(summary.duration_seconds)
