"""RPCs as the chaos scenarios make them: without the SDK's retries, every attempt tallied.

The SDK retries UNAVAILABLE by itself; here each attempt counts, so the report shows what a
caller without retries would have seen. Like the SDK's, the channels watch the servers' health
(gRPC client-side health checking), as a client that can drain cleanly must. Channels reconnect
within 20-200 ms (gRPC's default backoff starts at 1 s), so the time from a server's start to
its first answer is measured, not the channel's backoff.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc

from generated.huleedu.batch.v1 import batch_pb2, batch_pb2_grpc
from generated.huleedu.conductor.v1 import conductor_pb2, conductor_pb2_grpc

OK = "OK"
UNAVAILABLE = "UNAVAILABLE"
CANCELLED = "CANCELLED"
CALL_TIMEOUT = 5.0
# Codes that are answers, not failures: a target whose step completed unsatisfied.
ANSWERS = frozenset({OK, "FAILED_PRECONDITION"})

# Like the SDKs, the channel watches the server's health and sends nothing to one that is
# NOT_SERVING (a drain): a call it would send fails UNAVAILABLE at once instead.
_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": "accepting"},
}
_OPTIONS = [
    ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
    ("grpc.enable_retries", 0),
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.min_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 200),
]


def channel(target: str) -> grpc.aio.Channel:
    """An insecure channel without retries that reconnects quickly."""
    return grpc.aio.insecure_channel(target, options=_OPTIONS)


@dataclass(frozen=True, slots=True)
class Call:
    at: float  # time.monotonic() when it started
    server: str
    method: str
    code: str
    seconds: float


@dataclass
class Tally:
    """Every call's result."""

    calls: list[Call] = field(default_factory=list)

    def codes(self) -> Counter[str]:
        return Counter(call.code for call in self.calls)

    def failed(self, tolerated: frozenset[str] = frozenset()) -> list[Call]:
        """Calls that ended with neither an answer nor a tolerated code."""
        return [c for c in self.calls if c.code not in ANSWERS and c.code not in tolerated]

    def count(self, code: str) -> int:
        return sum(1 for call in self.calls if call.code == code)

    def note(self, began: float, server: str, method: str, code: str) -> None:
        """A call that started at ``began`` (``time.monotonic()``) ended now with ``code``."""
        self.calls.append(Call(began, server, method, code, time.monotonic() - began))

    async def timed(self, server: str, method: str, call: Awaitable[object]) -> str:
        """Await ``call``; note and return its code."""
        began = time.monotonic()
        try:
            await call
            code = OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        self.note(began, server, method, code)
        return code


class Stubs:
    """The two services' stubs over one channel each, keyed by server name."""

    def __init__(self, conductors: dict[str, str], batches: dict[str, str]) -> None:
        self._channels = [channel(t) for t in [*conductors.values(), *batches.values()]]
        chans = iter(self._channels)
        self.conductors = {
            name: conductor_pb2_grpc.PipelineConductorServiceStub(next(chans))
            for name in conductors
        }
        self.batches = {name: batch_pb2_grpc.BatchServiceStub(next(chans)) for name in batches}

    async def close(self) -> None:
        for chan in self._channels:
            await chan.close()


@asynccontextmanager
async def stubs(conductors: dict[str, str], batches: dict[str, str]) -> AsyncIterator[Stubs]:
    opened = Stubs(conductors, batches)
    try:
        yield opened
    finally:
        await opened.close()


def conductor_read(
    stub: conductor_pb2_grpc.PipelineConductorServiceAsyncStub, batch_id: str
) -> tuple[str, Awaitable[object]]:
    """One of the conductor's reads of a batch, at random."""
    if random.random() < 0.5:
        request = conductor_pb2.GetBatchPipelineStateRequest(batch_id=batch_id)
        return "GetBatchPipelineState", stub.GetBatchPipelineState(request, timeout=CALL_TIMEOUT)
    resolve = conductor_pb2.ResolvePipelineRequest(
        batch_id=batch_id, target="comprehensive", dry_run=True
    )
    return "ResolvePipeline", stub.ResolvePipeline(resolve, timeout=CALL_TIMEOUT)


def batch_read(
    stub: batch_pb2_grpc.BatchServiceAsyncStub, batch_id: str
) -> tuple[str, Awaitable[object]]:
    """One of the BatchService's reads, at random."""
    if random.random() < 0.5:
        request = batch_pb2.GetBatchStatusRequest(batch_id=batch_id)
        return "GetBatchStatus", stub.GetBatchStatus(request, timeout=CALL_TIMEOUT)
    listing = batch_pb2.ListBatchesRequest(page_size=5)
    return "ListBatches", stub.ListBatches(listing, timeout=CALL_TIMEOUT)


class Prober:
    """Reads both servers' state of the load's batches in a loop, every result tallied."""

    def __init__(
        self,
        stubs: Stubs,
        tally: Tally,
        batches: Callable[[], Sequence[str]],
        pause: float,
    ) -> None:
        self._stubs = stubs
        self._tally = tally
        self._batches = batches
        self._pause = pause

    async def run(self, server: str, stop: asyncio.Event) -> None:
        """Call ``server`` until ``stop`` is set; the call in flight then finishes."""
        while not stop.is_set():
            known = self._batches()
            if not known:
                await asyncio.sleep(0.05)
                continue
            batch_id = random.choice(known)
            if server in self._stubs.conductors:
                method, call = conductor_read(self._stubs.conductors[server], batch_id)
            else:
                method, call = batch_read(self._stubs.batches[server], batch_id)
            code = await self._tally.timed(server, method, call)
            # a server that is down refuses at once: do not spin
            await asyncio.sleep(self._pause if code in ANSWERS else max(self._pause, 0.02))


async def first_answer(
    call: Callable[[], Awaitable[object]], since: float, within: float = 60.0
) -> float:
    """Seconds from ``since`` (``time.monotonic()``) to the first call that answers OK."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            await call()
            return time.monotonic() - since
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
        await asyncio.sleep(0.005)
    raise TimeoutError(f"no answer within {within:.0f} s")
