"""Serving status of a server: the gRPC health service and ``/healthz`` report the same thing.

A server is SERVING only when it has finished starting, is not draining, and every required
backend's probe passed on its latest run. Probes run periodically (each with a timeout) so a
backend that goes down flips the status to NOT_SERVING and back once it returns. A backend the
server can do without (the conductor's Redis: PostgreSQL answers in its place) is *optional*:
while it is down the server stays SERVING and reports itself ``degraded``. ``HealthMetrics``
exports the same state to ``/metrics`` (``mesh_serving``, ``mesh_backend_up{backend}``), for
alerting.

The service name ``liveness`` answers SERVING from the end of start-up until the process exits,
whatever the backends or the drain say: a liveness probe (Kubernetes) restarts a process that no
longer answers, never one that is only waiting for a backend or draining.

The service name ``accepting`` answers SERVING from the end of start-up until the drain begins,
whatever the backends say: what the SDKs' channels watch (client-side health checking), so a
client stops sending to a server that drains, yet still reaches one with a backend down (whose
calls then fail with the server's own UNAVAILABLE, naming the backend, or succeed when they do
not need it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence

from grpc_health.v1 import health, health_pb2
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[object]]
LIVENESS = "liveness"  # the health service name of a liveness probe
ACCEPTING = "accepting"  # SERVING between start-up and the drain: what clients watch
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    """Owns the health servicer and decides SERVING vs NOT_SERVING for every service name."""

    def __init__(
        self,
        services: Sequence[str],
        probes: Mapping[str, Probe] | None = None,
        interval: float = 1.0,
        probe_timeout: float = 2.0,
        optional: Collection[str] = (),
    ) -> None:
        self.servicer = health.aio.HealthServicer()
        self._services = ("", *services)
        self._probes = dict(probes or {})
        self._optional = frozenset(optional)
        self._interval = interval
        self._timeout = probe_timeout
        self._started = False
        self._draining = False
        self.backends: dict[str, bool] = dict.fromkeys(self._probes, False)
        self._task: asyncio.Task[None] | None = None

    @property
    def serving(self) -> bool:
        required = (up for name, up in self.backends.items() if name not in self._optional)
        return self._started and not self._draining and all(required)

    @property
    def degraded(self) -> bool:
        """Serving, with an optional backend down."""
        return self.serving and not all(self.backends.values())

    async def start(self) -> None:
        """Mark start-up done and begin probing backends."""
        await self.check_backends()
        self._started = True
        await self.servicer.set(LIVENESS, SERVING)
        await self.servicer.set(ACCEPTING, SERVING)
        await self._publish()
        if self._probes:
            self._task = asyncio.create_task(self._monitor(), name="health-monitor")

    async def drain(self) -> None:
        """NOT_SERVING from now on (shutdown): load balancers stop sending new work."""
        self._draining = True
        await self.servicer.set(ACCEPTING, NOT_SERVING)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._publish()

    async def check_backends(self) -> None:
        results = await asyncio.gather(*(self._probe(n, p) for n, p in self._probes.items()))
        for name, ok in zip(self._probes, results, strict=True):
            if self.backends.get(name) != ok:
                log.log(
                    logging.INFO if ok else logging.ERROR,
                    "backend %s %s",
                    name,
                    "is reachable" if ok else "is DOWN",
                )
            self.backends[name] = ok

    async def _probe(self, name: str, probe: Probe) -> bool:
        try:
            await asyncio.wait_for(probe(), self._timeout)
        except Exception as exc:  # any failure of a probe means "down"
            log.debug("probe %s failed: %r", name, exc)
            return False
        return True

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check_backends()
            await self._publish()

    async def _publish(self) -> None:
        status = SERVING if self.serving else NOT_SERVING
        for service in self._services:
            await self.servicer.set(service, status)


class HealthMetrics(Collector):
    """Exports a ``HealthReporter``'s state at scrape time: 1 is up/serving, 0 is not."""

    def __init__(self, reporter: HealthReporter, registry: CollectorRegistry) -> None:
        self._reporter = reporter
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "mesh_serving",
            "1 while the server reports SERVING (started, not draining, every backend up).",
            value=int(self._reporter.serving),
        )
        backend_up = GaugeMetricFamily(
            "mesh_backend_up",
            "1 if the backend's latest health probe passed, else 0.",
            labels=["backend"],
        )
        for name, up in self._reporter.backends.items():
            backend_up.add_metric([name], int(up))
        yield backend_up

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the backends are only known at collection
