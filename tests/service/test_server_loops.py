"""The loops beside each server (the outbox relay): one that ends shuts the server down with an
error; on shutdown each is halted after the consumer, and cancelled only if it will not stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

import batch_server.app as batch_app
import conductor_server.app as conductor_app
from conductor_server.settings import ConductorSettings
from mesh import backends, runtime
from mesh.memory_bus import MemoryBus
from mesh.runtime import LoopEnded
from mesh.settings import BackendSettings, ServerSettings
from tests.support.batch import settings_for


async def _broken() -> None:
    await asyncio.sleep(0.3)
    raise ConnectionResetError("the relay's connection went away")


async def _nothing() -> None:
    return None


CONDUCTOR = ConductorSettings(
    server=ServerSettings(host="127.0.0.1", grpc_port=0, metrics_port=0, uvloop=False),
    backends=BackendSettings(),
)


def _conductor_with_loop(
    monkeypatch: pytest.MonkeyPatch,
    run: Callable[[], Coroutine[Any, Any, None]],
    halt: Callable[[], Awaitable[None]],
) -> None:
    """The embedded PipelineConductor's wiring, plus one background loop ``(run, halt)``."""
    embedded = conductor_app._embedded

    async def with_the_loop(*args: Any) -> conductor_app.Wiring:
        wiring = await embedded(*args)
        wiring.background.append((run, halt))
        return wiring

    monkeypatch.setattr(conductor_app, "_embedded", with_the_loop)


def _batch_service_with_loop(
    monkeypatch: pytest.MonkeyPatch,
    run: Callable[[], Coroutine[Any, Any, None]],
    halt: Callable[[], Awaitable[None]],
) -> None:
    """The embedded BatchService's wiring, plus one background loop ``(run, halt)``."""
    embedded = batch_app._embedded

    def with_the_loop(*args: Any) -> batch_app.Wiring:
        wiring = embedded(*args)
        wiring.background.append((run, halt))
        return wiring

    monkeypatch.setattr(batch_app, "_embedded", with_the_loop)


async def _serve_conductor(stop: asyncio.Event) -> None:
    await conductor_app.serve(CONDUCTOR, stop, MemoryBus())


async def _serve_batch(stop: asyncio.Event) -> None:
    await batch_app.serve(settings_for("127.0.0.1:1"), stop, MemoryBus())


WithLoop = Callable[
    [pytest.MonkeyPatch, Callable[[], Coroutine[Any, Any, None]], Callable[[], Awaitable[None]]],
    None,
]
SERVERS: dict[str, tuple[WithLoop, Callable[[asyncio.Event], Awaitable[None]]]] = {
    "conductor": (_conductor_with_loop, _serve_conductor),
    "batch": (_batch_service_with_loop, _serve_batch),
}


@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_a_server_stops_when_a_background_loop_fails(
    monkeypatch: pytest.MonkeyPatch, server: str
) -> None:
    with_loop, serve = SERVERS[server]
    with_loop(monkeypatch, _broken, _nothing)
    with pytest.raises(LoopEnded, match="_broken ended on its own") as raised:
        await asyncio.wait_for(serve(asyncio.Event()), 30)
    assert isinstance(raised.value.__cause__, ConnectionResetError)


@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_a_loop_that_will_not_stop_is_cancelled_on_shutdown(
    monkeypatch: pytest.MonkeyPatch, server: str
) -> None:
    cancelled = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def never() -> None:  # a halt that waits on something that will not come
        await asyncio.Event().wait()

    with_loop, serve = SERVERS[server]
    with_loop(monkeypatch, stubborn, never)
    monkeypatch.setattr(runtime, "LOOP_STOP_SECONDS", 0.2)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    await asyncio.wait_for(serve(stop), 30)
    assert cancelled.is_set()


@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_a_loop_is_halted_not_cancelled_and_after_the_consumer(
    monkeypatch: pytest.MonkeyPatch, server: str
) -> None:
    """The relay finishes what it published (so a restart does not publish it again), and it
    stops after the consumer, whose last batch may have written events for it to relay."""
    seen: list[str] = []
    halted = asyncio.Event()

    async def relay_like() -> None:
        try:
            await halted.wait()
            seen.append("loop ended")
        except asyncio.CancelledError:
            seen.append("loop cancelled")
            raise

    async def halt() -> None:
        seen.append("halt")
        halted.set()

    stop_consumer = backends.stop_consumer

    async def recording_stop_consumer(*args: Any) -> None:
        seen.append("consumer stopped")
        await stop_consumer(*args)

    monkeypatch.setattr(backends, "stop_consumer", recording_stop_consumer)
    with_loop, serve = SERVERS[server]
    with_loop(monkeypatch, relay_like, halt)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    await asyncio.wait_for(serve(stop), 30)
    assert seen == ["consumer stopped", "halt", "loop ended"]
