"""In-process gRPC servers on loopback for tests (free ports: ``bench.harness.ports``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mesh.grpc.health import ACCEPTING


@contextlib.asynccontextmanager
async def serving(register: Callable[[grpc.aio.Server], object]) -> AsyncIterator[str]:
    """An in-process gRPC server on a free loopback port with what ``register`` adds (e.g.
    ``lambda s: add_BatchServiceServicer_to_server(fake, s)``) and the standard health service,
    its ``accepting`` service SERVING (the SDKs' channels watch it); its ``host:port``."""
    server = grpc.aio.server()
    register(server)
    reporter = health.aio.HealthServicer()
    await reporter.set(ACCEPTING, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(reporter, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)
