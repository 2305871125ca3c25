"""Loopback ports and in-process servers for tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import grpc


def free_port() -> int:
    """A loopback port nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serving(register: Callable[[grpc.aio.Server], object]) -> AsyncIterator[str]:
    """An in-process gRPC server on a free loopback port with what ``register`` adds (e.g.
    ``lambda s: add_BatchServiceServicer_to_server(fake, s)``); its ``host:port``."""
    server = grpc.aio.server()
    register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)
