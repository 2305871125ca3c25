"""Per-RPC metrics: plain counters exported as Prometheus families with the usual semantics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mesh.grpc.metrics import LATENCY_BUCKETS, RpcMetrics


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counts_codes_and_latency_buckets_as_prometheus_expects() -> None:
    registry = CollectorRegistry()
    metrics = RpcMetrics(registry)
    stats = metrics.method("pkg.Svc", "Call")
    assert metrics.method("pkg.Svc", "Call") is stats  # one per method
    for code, elapsed in [("OK", 0.0005), ("OK", 0.003), ("NOT_FOUND", 0.003), ("OK", 42.0)]:
        stats.started += 1
        stats.finish(code, elapsed)
    stats.started += 1  # one still in flight
    samples = _samples(registry)

    def value(name: str, **labels: str) -> float:
        labels |= {"grpc_service": "pkg.Svc", "grpc_method": "Call"}
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("grpc_server_started_total") == 5
    assert value("grpc_server_handled_total", grpc_code="OK") == 3
    assert value("grpc_server_handled_total", grpc_code="NOT_FOUND") == 1
    bucket = "grpc_server_handling_seconds_bucket"
    assert value(bucket, le="0.0005") == 1  # a value on a bound counts in that bucket (le)
    assert value(bucket, le="0.0025") == 1
    assert value(bucket, le="0.005") == 3  # cumulative
    assert value(bucket, le=str(float(LATENCY_BUCKETS[-1]))) == 3
    assert value(bucket, le="+Inf") == 4
    assert value("grpc_server_handling_seconds_count") == 4
    assert value("grpc_server_handling_seconds_sum") == 0.0005 + 0.003 + 0.003 + 42.0


def test_an_unused_registry_exports_nothing_per_method() -> None:
    registry = CollectorRegistry()
    RpcMetrics(registry)
    assert not any(labels for _, labels in _samples(registry))
