"""Every scenario, in the order ``make chaos`` runs them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from chaos.report import Row
from chaos.scenarios import drain, faults, namespaces, poison, replicas, storms
from chaos.trial import Context

Scenario = Callable[[Context], Awaitable[Row]]

SCENARIOS: dict[str, Scenario] = {
    "sigkill-conductor": faults.sigkill_conductor,
    "sigkill-batch": faults.sigkill_batch,
    "redis-flushall": faults.redis_flushall,
    "redis-down": faults.redis_down,
    "kafka-down": faults.kafka_down,
    "postgres-down": faults.postgres_down,
    "duplicate-storm": storms.duplicate_storm,
    "concurrent-producers": storms.concurrent_producers,
    "poison": poison.poison,
    "sigterm-under-load": drain.sigterm_under_load,
    "replica-killed": replicas.replica_killed,
    "two-namespaces": namespaces.two_namespaces,
}
