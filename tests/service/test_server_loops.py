"""The loops beside a server (``mesh.app.run_app``, the skeleton both servers run on): a loop
that ends shuts the server down with an error; on shutdown each loop is halted after the
consumers, and cancelled only if it will not stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mesh import runtime
from mesh.app import App, run_app
from mesh.events.bus import Message
from mesh.events.memory import MemoryBus
from mesh.events.topics import EventKind
from mesh.grpc.status import StatusTable
from mesh.runtime import LoopEnded
from mesh.settings import ServerSettings

SERVER = ServerSettings(host="127.0.0.1", grpc_port=0, metrics_port=0, uvloop=False)


class RecordingConsumer:
    """A memory-bus consumer that notes when it is stopped."""

    def __init__(self, seen: list[str]) -> None:
        async def ignore(messages: Sequence[Message]) -> None:
            return None

        self._inner = MemoryBus().consumer("g", [EventKind.BATCH_CREATED], ignore, service="t")
        self._seen = seen

    async def start(self) -> None:
        await self._inner.start()

    async def run(self) -> None:
        await self._inner.run()

    async def stop(self) -> None:
        self._seen.append("consumer stopped")
        await self._inner.stop()

    async def close(self) -> None:
        await self._inner.close()


async def serve(
    stop: asyncio.Event,
    run: Callable[[], Coroutine[Any, Any, None]],
    halt: Callable[[], Awaitable[None]],
    seen: list[str] | None = None,
) -> None:
    app = App(
        name="test server",
        services=[],
        registrations=[],
        table=StatusTable("test", []),
        scopes={},
        consumers=[RecordingConsumer(seen if seen is not None else [])],
        loops=[(run, halt)],
    )
    await run_app(app, SERVER, CollectorRegistry(), stop)


async def _nothing() -> None:
    return None


async def test_a_server_stops_when_a_background_loop_fails() -> None:
    async def broken() -> None:
        await asyncio.sleep(0.3)  # runs a while (the server is up), then fails
        raise ConnectionResetError("the relay's connection went away")

    with pytest.raises(LoopEnded, match="broken ended on its own") as raised:
        await asyncio.wait_for(serve(asyncio.Event(), broken, _nothing), 30)
    assert isinstance(raised.value.__cause__, ConnectionResetError)


async def test_a_loop_that_will_not_stop_is_cancelled_on_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cancelled = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def never() -> None:  # a halt that waits on something that will not come
        await asyncio.Event().wait()

    monkeypatch.setattr(runtime, "LOOP_STOP_SECONDS", 0.2)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    await asyncio.wait_for(serve(stop, stubborn, never), 30)
    assert cancelled.is_set()


async def test_a_loop_is_halted_not_cancelled_and_after_the_consumer() -> None:
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

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    await asyncio.wait_for(serve(stop, relay_like, halt, seen), 30)
    assert seen == ["consumer stopped", "halt", "loop ended"]
