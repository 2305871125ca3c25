"""Helpers of the BatchService service tests (no tests here).

A BatchService in embedded mode on a free port, sharing the in-memory bus of a real embedded
PipelineConductor (``conductor`` fixture of ``tests/service/conftest.py``), and a ``Worker`` that
plays the worker services: it takes the StepCommands from the bus and publishes one
EssayStepOutcome per essay, as the policy it is given says.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from batch_server.app import serve
from batch_server.domain.model import Batch
from batch_server.ports import ContentStore
from batch_server.settings import BatchOptions, BatchSettings
from clients import BatchClient
from generated.huleedu.events.v1 import events_pb2 as ev
from mesh.events import envelope
from mesh.events.bus import OutgoingEvent
from mesh.events.memory import MemoryBus
from mesh.events.topics import COMMAND_KINDS, EventKind, topic_name
from mesh.grpc.server import GrpcServer
from mesh.settings import BackendSettings, ServerSettings
from tests.support.polling import eventually

Policy = Callable[[str, str], bool]  # (step, essay id) -> succeeded?


def always(_step: str, _essay: str) -> bool:
    return True


@dataclass
class RunningBatch:
    server: GrpcServer
    bus: MemoryBus
    client: BatchClient

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


def completion(batch: Batch, step: str, ok: Sequence[int]) -> ev.BatchStepCompleted:
    """The conductor's ``BatchStepCompleted`` of ``step`` in which the essays at the positions
    ``ok`` succeeded (output ``<step>-<position>``); satisfied at half or more."""
    total = len(batch.essays)
    return ev.BatchStepCompleted(
        batch_id=batch.batch_id,
        step=step,
        succeeded=len(ok),
        failed=total - len(ok),
        total=total,
        satisfied=len(ok) / total >= 0.5,
        succeeded_essays=[
            ev.EssayRef(essay_id=batch.essays[i].essay_id, text_storage_id=f"{step}-{i}")
            for i in ok
        ],
    )


def settings_for(conductor_address: str, **options: object) -> BatchSettings:
    return BatchSettings(
        server=ServerSettings(host="127.0.0.1", grpc_port=0, metrics_port=0, uvloop=False),
        backends=BackendSettings(),
        options=BatchOptions(
            conductor_address=conductor_address,
            conductor_timeout_seconds=5.0,
            watch_poll_seconds=0.2,
            **options,  # type: ignore[arg-type]
        ),
    )


@asynccontextmanager
async def batch_service(
    settings: BatchSettings, bus: MemoryBus, content: ContentStore | None = None
) -> AsyncIterator[RunningBatch]:
    """``batch_server.app.serve`` on ``bus`` (and ``content``, if given) until the block ends."""
    stop = asyncio.Event()
    ready: asyncio.Future[GrpcServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(settings, stop, bus=bus, on_ready=ready.set_result, shared_content=content)
    )
    waiting: set[asyncio.Future[Any]] = {task, ready}
    done, _ = await asyncio.wait(waiting, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, "BatchService did not start within 30 s"
    try:
        async with BatchClient(f"127.0.0.1:{ready.result().port}", timeout=10) as client:
            yield RunningBatch(ready.result(), bus, client)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def events_of(bus: MemoryBus, kind: EventKind) -> list[ev.EventEnvelope]:
    return [envelope.decode(r.value) for r in bus.records(topic_name(kind, bus.namespace))]


def step_commands(bus: MemoryBus) -> list[ev.StepCommand]:
    found = []
    for kind in dict.fromkeys(COMMAND_KINDS.values()):
        found += [e.step_command for e in events_of(bus, kind)]
    return found


@dataclass
class Worker:
    """Answers every StepCommand on the bus once, with outcomes from ``policy`` (of the
    command's run and attempt), except the commands of the steps it keeps ``silent``.

    A success's output is ``<step>-out-<essay id>``, or with ``content`` a text stored there:
    the essay's text with `` [<step>]`` appended. A failure carries the error ``TEST_FAILURE``.
    """

    bus: MemoryBus
    policy: Policy = always
    duplicate: bool = False  # publish every outcome twice
    answered: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)
    content: ContentStore | None = None

    async def work(self) -> int:
        """Answer the commands not answered yet; return how many."""
        fresh = 0
        for kind in dict.fromkeys(COMMAND_KINDS.values()):
            for command_envelope in events_of(self.bus, kind):
                if command_envelope.event_id in self.answered:
                    continue
                if command_envelope.step_command.step in self.silent:
                    continue
                self.answered.add(command_envelope.event_id)
                fresh += 1
                await self._answer(command_envelope.step_command)
        return fresh

    async def _answer(self, command: ev.StepCommand) -> None:
        outcomes = []
        for essay in command.essays:
            ok = self.policy(command.step, essay.essay_id)
            payload = ev.EssayStepOutcome(
                batch_id=command.batch_id,
                step=command.step,
                essay_id=essay.essay_id,
                outcome=ev.STEP_OUTCOME_SUCCEEDED if ok else ev.STEP_OUTCOME_FAILED,
                output_storage_id=await self._output(command.step, essay) if ok else "",
                run_id=command.run_id,
                attempt=command.attempt,
            )
            if not ok:
                payload.error.code = "TEST_FAILURE"
                payload.error.message = f"the test failed {command.step}"
            built = envelope.build(payload, source_service="test-worker")
            outcomes.append(OutgoingEvent(EventKind.ESSAY_STEP_OUTCOME, built))
        if self.duplicate:
            outcomes += outcomes
        await self.bus.publish_many(outcomes)

    async def _output(self, step: str, essay: ev.EssayRef) -> str:
        if self.content is None:
            return f"{step}-out-{essay.essay_id}"
        text = await self.content.get(essay.text_storage_id)
        [storage_id] = await self.content.put_many([f"{text} [{step}]"])
        return storage_id

    async def until(self, done: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
        """Keep answering commands until ``done()``."""

        async def answered_until_done() -> bool:
            if await done():
                return True
            await self.work()
            return False

        await eventually(answered_until_done, within, what="the workers' goal")
