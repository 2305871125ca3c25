"""The load of a scenario: batches created and pipelines started through the BatchService.

A new batch every ``interval`` seconds until stopped, each in its own task: CreateBatch with a
request id, then StartPipeline with one. An attempt that fails UNAVAILABLE or DEADLINE_EXCEEDED
(a server killed, a backend down) is retried with the same request id, on the next BatchService
when there are several, until it answers or ``give_up`` seconds pass; every attempt is tallied.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from chaos.ledger import Ledger
from chaos.rpc import OK, Stubs, Tally
from generated.huleedu.batch.v1 import batch_pb2, batch_pb2_grpc

PIPELINE = "comprehensive"
RETRY_PAUSE = 0.2
CALL_TIMEOUT = 10.0
_RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
T = TypeVar("T")
Attempt = Callable[["batch_pb2_grpc.BatchServiceAsyncStub"], Awaitable[T]]  # a .pyi-only type


class GaveUp(Exception):
    """A create or start still failed after ``give_up`` seconds."""


class Load:
    """Batches and runs at a steady pace (see the module docstring); ``gave_up`` says which
    creates or starts never got through."""

    def __init__(
        self,
        stubs: Stubs,
        ledger: Ledger,
        tally: Tally,
        *,
        essays: int,
        interval: float,
        give_up: float = 180.0,
        on_run: Callable[[str, str], None] | None = None,
    ) -> None:
        self._stubs = stubs
        self._targets = itertools.cycle(sorted(stubs.batches))
        self._ledger = ledger
        self._tally = tally
        self._essays = essays
        self._interval = interval
        self._give_up = give_up
        self._on_run = on_run
        self.gave_up: list[str] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Start a batch every interval until ``stop``; then wait for the ones under way."""
        tasks: list[asyncio.Task[None]] = []
        for number in itertools.count():
            tasks.append(asyncio.create_task(self._batch(number)))
            try:
                await asyncio.wait_for(stop.wait(), self._interval)
                break
            except TimeoutError:
                continue
        await asyncio.gather(*tasks)

    async def _batch(self, number: int) -> None:
        texts = [
            f"Essay {i} of batch {number}: teh cat sat on teh mat." for i in range(self._essays)
        ]
        create = batch_pb2.CreateBatchRequest(
            request_id=str(uuid.uuid4()),
            essays=[batch_pb2.EssayInput(text=t, client_ref=f"e{i}") for i, t in enumerate(texts)],
            metadata=batch_pb2.BatchMetadata(
                name=f"chaos {number}", flags={"prompt_attached": True}
            ),
        )
        try:
            created = await self._retry(
                "CreateBatch", lambda stub: stub.CreateBatch(create, timeout=CALL_TIMEOUT)
            )
            batch = created.batch
            self._ledger.batch_created(batch.batch_id, [e.essay_id for e in batch.essays])
            start = batch_pb2.StartPipelineRequest(
                batch_id=batch.batch_id, pipeline=PIPELINE, request_id=str(uuid.uuid4())
            )
            started = await self._retry(
                "StartPipeline", lambda stub: stub.StartPipeline(start, timeout=CALL_TIMEOUT)
            )
        except GaveUp as exc:
            self.gave_up.append(str(exc))
            return
        self._ledger.run_started(started.run.run_id, batch.batch_id)
        if self._on_run is not None:
            self._on_run(batch.batch_id, started.run.run_id)

    async def _retry(self, method: str, attempt: Attempt[T]) -> T:
        deadline = time.monotonic() + self._give_up
        while True:
            target = next(self._targets)
            began = time.monotonic()
            try:
                result = await attempt(self._stubs.batches[target])
            except grpc.aio.AioRpcError as exc:
                self._tally.note(began, target, method, exc.code().name)
                if exc.code() not in _RETRIED or time.monotonic() > deadline:
                    raise GaveUp(f"{method}: {exc.code().name} {exc.details()}") from exc
                await asyncio.sleep(RETRY_PAUSE)
                continue
            self._tally.note(began, target, method, OK)
            return result
