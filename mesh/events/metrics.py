"""Consumer metrics, declared once over an injected registry (labels: group, topic).

``mesh_consumer_lag{group,topic,partition}`` is how many records of each assigned partition the
group has not consumed yet (the partition's end offset less the consumer's position), measured
every few seconds off the consuming path (``Consumer``); ``mesh_consumer_replayed_total`` counts
consumed records that an operator replayed from a dead-letter topic (their ``replay.of`` header).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mesh.events.deadletter import Failure, error_type

_SIZE_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000)


class ConsumerMetrics:
    """Throughput, dead letters, retries and batch shape of every consumer of a process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumed = Counter(
            "mesh_consumer_consumed_total",
            "Records received from the bus.",
            ["group", "topic"],
            registry=registry,
        )
        self.handled = Counter(
            "mesh_consumer_handled_total",
            "Records the handler processed successfully.",
            ["group", "topic"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "mesh_consumer_dead_lettered_total",
            "Records written to a dead-letter topic.",
            ["group", "topic", "error_type"],
            registry=registry,
        )
        self.retries = Counter(
            "mesh_consumer_retries_total",
            "Transient failures that paused a partition for a retry.",
            ["group", "topic"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "mesh_consumer_batch_records",
            "Records per handled batch.",
            ["group"],
            buckets=_SIZE_BUCKETS,
            registry=registry,
        )
        self.dead_letter_failures = Counter(
            "mesh_consumer_dead_letter_write_failures_total",
            "Dead-letter writes that failed (the partition waits and retries).",
            ["group", "error_type"],
            registry=registry,
        )
        self.assigned = Gauge(
            "mesh_consumer_assigned_partitions",
            "Partitions assigned to the consumer (0 until it has joined its group).",
            ["group"],
            registry=registry,
        )
        self.lag = Gauge(
            "mesh_consumer_lag",
            "Records of an assigned partition not consumed yet (end offset less position).",
            ["group", "topic", "partition"],
            registry=registry,
        )
        self.replayed = Counter(
            "mesh_consumer_replayed_total",
            "Consumed records replayed from a dead-letter topic (with a replay.of header).",
            ["group", "topic"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "mesh_consumer_batch_duration_seconds",
            "Time to handle, dead-letter and commit one batch.",
            ["group"],
            registry=registry,
        )

    def observe(
        self,
        group: str,
        consumed: Mapping[str, int],
        handled: Mapping[str, int],
        dead: Sequence[Failure],
        retried: Sequence[str],
        seconds: float,
        replayed: Mapping[str, int] | None = None,
    ) -> None:
        """Record one batch (per-topic counts; one label lookup per topic, not per record)."""
        for topic, n in consumed.items():
            self.consumed.labels(group, topic).inc(n)
        for topic, n in (replayed or {}).items():
            if n:
                self.replayed.labels(group, topic).inc(n)
        for topic, n in handled.items():
            if n:
                self.handled.labels(group, topic).inc(n)
        for failure in dead:
            self.dead_lettered.labels(group, failure.record.topic, error_type(failure.error)).inc()
        for topic in retried:
            self.retries.labels(group, topic).inc()
        self.batch_size.labels(group).observe(sum(consumed.values()))
        self.batch_seconds.labels(group).observe(seconds)
