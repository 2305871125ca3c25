"""``BatchClient.watch_batch`` resumes a stream cut with UNAVAILABLE, for the same run."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest

from clients import BatchClient
from clients.errors import RpcError
from generated.huleedu.batch.v1 import batch_pb2 as pb


def run(status: int, *steps: tuple[str, int]) -> pb.PipelineRun:
    return pb.PipelineRun(
        run_id="run-1",
        batch_id="b",
        status=status,  # type: ignore[arg-type]
        steps=[pb.RunStep(step=name, status=s) for name, s in steps],  # type: ignore[arg-type]
    )


START = run(pb.RUN_STATUS_RUNNING, ("spellcheck", pb.RUN_STEP_STATUS_DISPATCHED))
MIDDLE = run(pb.RUN_STATUS_RUNNING, ("spellcheck", pb.RUN_STEP_STATUS_SATISFIED))
END = run(pb.RUN_STATUS_COMPLETED, ("spellcheck", pb.RUN_STEP_STATUS_SATISFIED))


def cut(code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "cut")


class Stream:
    """One server stream: these updates, then this error (or the end)."""

    def __init__(self, runs: Sequence[pb.PipelineRun], error: grpc.aio.AioRpcError | None) -> None:
        self._runs = runs
        self._error = error

    def __aiter__(self) -> AsyncIterator[pb.WatchBatchResponse]:
        return self._updates()

    async def _updates(self) -> AsyncIterator[pb.WatchBatchResponse]:
        for n, state in enumerate(self._runs, 1):
            yield pb.WatchBatchResponse(run=state, sequence=n, changed_step="spellcheck")
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        pass


class Server:
    """Answers each WatchBatch call with the next scripted stream; records the requests."""

    def __init__(self, *streams: Stream) -> None:
        self._streams = list(streams)
        self.requests: list[pb.WatchBatchRequest] = []

    def __call__(self, request: pb.WatchBatchRequest, **_: object) -> Stream:
        self.requests.append(request)
        return self._streams.pop(0) if len(self._streams) > 1 else self._streams[0]


async def watched(server: Server, resume_for: float = 60.0) -> list[pb.WatchBatchResponse]:
    async with BatchClient("127.0.0.1:1") as client:
        client.stub.WatchBatch = server  # type: ignore[assignment]
        return [update async for update in client.watch_batch("b", resume_for=resume_for)]


async def test_a_cut_stream_resumes_for_the_same_run_without_repeats() -> None:
    server = Server(
        Stream([START, MIDDLE], cut()),
        Stream([], cut()),  # the server is not back yet
        Stream([MIDDLE, END], None),  # a resumed stream opens with the current state
    )
    updates = await watched(server)
    assert [u.run for u in updates] == [START, MIDDLE, END]
    assert [u.sequence for u in updates] == [1, 2, 3]
    assert [r.run_id for r in server.requests] == ["", "run-1", "run-1"]


async def test_other_errors_are_not_resumed() -> None:
    server = Server(Stream([START], cut(grpc.StatusCode.NOT_FOUND)), Stream([END], None))
    with pytest.raises(RpcError) as raised:
        await watched(server)
    assert raised.value.code is grpc.StatusCode.NOT_FOUND
    assert len(server.requests) == 1


async def test_resuming_gives_up_after_resume_for_seconds() -> None:
    server = Server(Stream([START], cut()), Stream([], cut()))
    began = time.monotonic()
    with pytest.raises(RpcError) as raised:
        await watched(server, resume_for=0.5)
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert 0.2 < time.monotonic() - began < 2
    assert 3 <= len(server.requests) <= 6  # backoff 0.1, 0.2, 0.4 s (less 20% jitter)


async def test_resume_for_zero_never_resumes() -> None:
    server = Server(Stream([START], cut()), Stream([END], None))
    with pytest.raises(RpcError):
        await watched(server, resume_for=0)
    assert len(server.requests) == 1


async def test_on_resume_is_told_each_attempt_to_resume() -> None:
    server = Server(Stream([START], cut()), Stream([], cut()), Stream([END], None))
    told: list[tuple[grpc.StatusCode, float]] = []
    async with BatchClient("127.0.0.1:1") as client:
        client.stub.WatchBatch = server  # type: ignore[assignment]
        watch = client.watch_batch("b", on_resume=lambda e, pause: told.append((e.code, pause)))
        updates = [update async for update in watch]
    assert [u.run for u in updates] == [START, END]
    assert [code for code, _ in told] == [grpc.StatusCode.UNAVAILABLE] * 2
    assert 0.07 < told[0][1] <= 0.1 < told[1][1] <= 0.2  # the backoff, less its jitter
