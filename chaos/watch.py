"""WatchBatch streams, and what a complete one must have shown.

``watch`` opens one stream (no resume: a cut stream ends with its code, tallied) and keeps its
updates. ``gaps`` holds a stream to the run's transitions in PostgreSQL: the stream's first
update is a snapshot of the run after some transition k, and its every later update must be
transition k+1, k+2, ... in order, through the last; the stream must end with the run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from chaos.check.postgres import Transition
from chaos.rpc import OK, Tally
from generated.huleedu.batch.v1 import batch_pb2, batch_pb2_grpc

WATCH_TIMEOUT = 600.0


@dataclass
class Stream:
    server: str
    run_id: str
    updates: list[batch_pb2.WatchBatchResponse] = field(default_factory=list)
    code: str = ""


async def watch(
    stub: batch_pb2_grpc.BatchServiceAsyncStub,
    tally: Tally,
    server: str,
    batch_id: str,
    run_id: str,
) -> Stream:
    """Read one WatchBatch stream to its end; a stream cancelled here is not tallied."""
    stream = Stream(server, run_id)
    began = time.monotonic()
    request = batch_pb2.WatchBatchRequest(batch_id=batch_id, run_id=run_id)
    try:
        async for update in stub.WatchBatch(request, timeout=WATCH_TIMEOUT):
            stream.updates.append(update)
        stream.code = OK
    except grpc.aio.AioRpcError as exc:
        stream.code = exc.code().name
    except asyncio.CancelledError:
        stream.code = "cancelled here"
        raise
    tally.note(began, server, "WatchBatch", stream.code)
    return stream


def _status(value: batch_pb2.RunStepStatus.ValueType) -> str:
    """The PostgreSQL spelling of a RunStepStatus (RUN_STEP_STATUS_DISPATCHED: dispatched)."""
    return batch_pb2.RunStepStatus.Name(value).removeprefix("RUN_STEP_STATUS_").lower()


def _run_status(value: batch_pb2.RunStatus.ValueType) -> str:
    return batch_pb2.RunStatus.Name(value).removeprefix("RUN_STATUS_").lower()


def gaps(stream: Stream, transitions: Sequence[Transition]) -> list[str]:
    """What ``stream`` missed of ``transitions`` (empty when it saw every one)."""
    if stream.code != OK:
        return [f"ended {stream.code}"]
    if not stream.updates:
        return ["no update"]
    changes = stream.updates[1:]
    k = len(transitions) - len(changes)
    if k < 0:
        return [f"{len(changes)} updates after the snapshot, {len(transitions)} transitions"]
    missed = []
    snapshot = {step.step: _status(step.status) for step in stream.updates[0].run.steps}
    latest = {t.step: t.status for t in transitions[:k]}  # what the snapshot must show
    wrong = {step: status for step, status in latest.items() if snapshot.get(step) != status}
    if wrong:
        missed.append(f"snapshot differs from the state after transition {k}: {wrong}")
    for update, t in zip(changes, transitions[k:], strict=True):
        step = next(s for s in update.run.steps if s.step == update.changed_step)
        seen = (update.changed_step, _status(step.status), step.succeeded, step.failed)
        expected = (t.step, t.status, t.succeeded, t.failed)
        if seen != expected:
            missed.append(f"update {seen} where transition {t.seq} is {expected}")
            break
    last = stream.updates[-1].run.status
    if _run_status(last) != transitions[-1].run_status:
        missed.append(f"ended on {_run_status(last)}, the run is {transitions[-1].run_status}")
    return missed
