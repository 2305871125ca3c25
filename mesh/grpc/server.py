"""A production gRPC server: grpc.aio with health, reflection, the interceptor and a side port.

``GrpcServer`` is an async context manager. Entering it registers the servicers (wrapped, each
method with its scope), the standard health service and, when the trust boundary allows it,
server reflection (v1 and v1alpha, with the protos' comments); binds (TLS when the boundary has
credentials), starts, opens the HTTP side port and marks the services SERVING once the backend
probes pass. Leaving it drains (``mesh.grpc.drain``): health NOT_SERVING while it still serves
for ``drain_seconds`` (load balancers stop routing to it), then the ``on_drain`` callbacks run
(open streams end) and new calls are refused with UNAVAILABLE, in-flight ones get
``shutdown_grace_seconds`` to finish, and the rest end UNAVAILABLE.

Health and reflection are not wrapped: they need no credentials, and nothing limits them. There
is no server-wide cap on concurrent RPCs (one client's streams would then starve everyone's
health checks); each principal has its own rate and stream limits instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2_grpc
from prometheus_client import CollectorRegistry

from mesh.grpc.drain import Drain
from mesh.grpc.health import HealthMetrics, HealthReporter
from mesh.grpc.http import HttpSidePort
from mesh.grpc.interceptor import Registrar, RpcWrapper
from mesh.grpc.metrics import RpcMetrics
from mesh.grpc.reflection import add_reflection
from mesh.grpc.status import StatusTable
from mesh.runtime import StartupError
from mesh.security.boundary import TrustBoundary
from mesh.security.scopes import ScopeTable
from mesh.settings import ServerSettings

if TYPE_CHECKING:
    from mesh.tracing.provider import Tracing

log = logging.getLogger(__name__)

Registration = Callable[[grpc.aio.Server], None]


class GrpcServer:
    """One running gRPC server. ``port`` and ``metrics_port`` are the bound ports."""

    def __init__(
        self,
        settings: ServerSettings,
        registrations: Sequence[Registration],
        service_names: Sequence[str],
        table: StatusTable,
        registry: CollectorRegistry,
        health: HealthReporter,
        scopes: ScopeTable,
        boundary: TrustBoundary | None = None,
        on_drain: Sequence[Callable[[], None]] = (),
        tracing: Tracing | None = None,
    ) -> None:
        self._settings = settings
        self._scopes = scopes
        self.boundary = boundary or TrustBoundary.unguarded()
        self._registrations = registrations
        self._service_names = tuple(service_names)
        self._table = table
        self._registry = registry
        self.health = health
        self._on_drain = tuple(on_drain)
        self._tracing = tracing
        self._drain = Drain()
        self._server: grpc.aio.Server | None = None
        self._side_port: HttpSidePort | None = None
        self.port = 0
        self.metrics_port = 0

    async def __aenter__(self) -> GrpcServer:
        s = self._settings
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", s.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        boundary = self.boundary
        metrics = RpcMetrics(self._registry)
        wrapper = RpcWrapper(self._table, metrics, self._scopes, boundary.guard, drain=self._drain)
        registrar = Registrar(server, wrapper, self._tracing)
        HealthMetrics(self.health, self._registry)
        for register in self._registrations:
            register(registrar)  # type: ignore[arg-type]  # duck-types the two calls it makes
        registrar.close()
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        if boundary.reflection:
            add_reflection(server, (*self._service_names, "grpc.health.v1.Health"))
        address = f"{s.host}:{s.grpc_port}"
        try:
            if boundary.credentials is not None:
                self.port = server.add_secure_port(address, boundary.credentials)
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError:  # grpcio raises when the bind fails (older versions returned 0)
            self.port = 0
        if self.port == 0:
            raise StartupError(_cannot_listen("gRPC", s.host, s.grpc_port, "GRPC_PORT"))
        self._server = server
        await server.start()
        if s.metrics_port >= 0:
            side_port = HttpSidePort(s.host, s.metrics_port, self._registry, self.health)
            try:
                await side_port.__aenter__()
            except OSError as exc:
                self._server = None
                await server.stop(0)
                message = _cannot_listen("metrics", s.host, s.metrics_port, "METRICS_PORT")
                raise StartupError(f"{message}: {exc.strerror or exc}") from exc
            self._side_port = side_port
            self.metrics_port = side_port.port
        await self.health.start()
        log.info(
            "serving %s on %s:%d (authentication: %s)",
            ", ".join(self._service_names),
            s.host,
            self.port,
            boundary.summary,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Drain and stop; idempotent."""
        if self._server is None:
            return
        server, self._server = self._server, None
        s = self._settings
        await self.health.drain()
        if s.drain_seconds > 0:
            log.info("draining: NOT_SERVING, still serving for %.1f s", s.drain_seconds)
            await asyncio.sleep(s.drain_seconds)
        for callback in self._on_drain:
            callback()
        log.info("refusing new calls; in-flight ones have %.1f s", s.shutdown_grace_seconds)
        await self._drain.close(s.shutdown_grace_seconds)
        await server.stop(1.0)
        if self._side_port is not None:
            await self._side_port.close()
        log.info("gRPC server stopped")


def _cannot_listen(what: str, host: str, port: int, setting: str) -> str:
    return (
        f"cannot listen for {what} on {host}:{port} (in use by another process?); "
        f"choose another port with {setting} or the server's prefixed form of it"
    )
