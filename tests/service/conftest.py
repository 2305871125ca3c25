"""Service-tier fixtures: real gRPC servers on free ports over in-memory backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from clients import ConductorClient, Credentials
from conductor_server.app import serve
from conductor_server.settings import ConductorSettings
from mesh.events.memory import MemoryBus
from mesh.grpc.server import GrpcServer
from mesh.settings import BackendSettings, ServerSettings


@dataclass
class RunningConductor:
    server: GrpcServer
    bus: MemoryBus
    client: ConductorClient

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


SERVER = ServerSettings(host="127.0.0.1", grpc_port=0, metrics_port=0, uvloop=False)


@asynccontextmanager
async def conductor_service(
    settings: ConductorSettings, bus: MemoryBus, client: ConductorClient | None = None
) -> AsyncIterator[RunningConductor]:
    """``conductor_server.app.serve`` on ``bus`` until the block ends, with a client (by
    default one without credentials)."""
    stop = asyncio.Event()
    ready: asyncio.Future[GrpcServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop, bus=bus, on_ready=ready.set_result))
    waiting: set[asyncio.Future[object]] = {task, ready}  # type: ignore[arg-type]
    done, _ = await asyncio.wait(waiting, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # start-up failed: raise its error
    assert ready in done, "conductor did not start within 30 s"
    try:
        address = f"127.0.0.1:{ready.result().port}"
        async with ConductorClient(address, timeout=10, credentials=Credentials()) as client:
            yield RunningConductor(ready.result(), bus, client)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def conductor() -> AsyncIterator[RunningConductor]:
    """An embedded-mode PipelineConductor serving on a free port, with a client."""
    settings = ConductorSettings(server=SERVER, backends=BackendSettings())
    async with conductor_service(settings, MemoryBus()) as running:
        yield running
