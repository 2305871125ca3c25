"""Load the mesh must take without a fault: outcomes delivered many times over, by many
producers at once, by Kafka and by RPC."""

from __future__ import annotations

import asyncio
import random

from chaos.report import Row
from chaos.rpc import CALL_TIMEOUT
from chaos.trial import Context, Trial, trial
from generated.huleedu.conductor.v1 import conductor_pb2
from generated.huleedu.events.v1 import events_pb2

RPC_REPEATS_PER_SECOND = 20


async def _repeat_by_rpc(t: Trial, stop: asyncio.Event) -> None:
    """RecordStepOutcome of outcomes the workers already sent (the RPC path of the same
    operation): each must answer, and count nothing again."""
    stub = next(iter(t.stubs.conductors.values()))
    while not stop.is_set():
        if t.ledger.outcomes:
            (batch, step, essay), ok = random.choice(list(t.ledger.outcomes.items()))
            request = conductor_pb2.RecordStepOutcomeRequest(
                batch_id=batch,
                step=step,
                essay_id=essay,
                outcome=events_pb2.STEP_OUTCOME_SUCCEEDED if ok else events_pb2.STEP_OUTCOME_FAILED,
            )
            call = stub.RecordStepOutcome(request, timeout=CALL_TIMEOUT)
            await t.tally.timed("conductor-1", "RecordStepOutcome", call)
        await asyncio.sleep(1 / RPC_REPEATS_PER_SECOND)


async def duplicate_storm(ctx: Context) -> Row:
    """A share (30%) of the outcomes delivered twice or three times, the repeats after the
    originals (many after their step completed), and outcomes already sent recorded again
    through RecordStepOutcome: every outcome counted once."""
    share = ctx.profile.duplicate_share
    async with trial(ctx, "duplicate-storm", duplicate_share=share) as t:
        t.start()
        stop = asyncio.Event()
        repeater = asyncio.create_task(_repeat_by_rpc(t, stop))
        await t.mid_run()
        await asyncio.sleep(ctx.profile.after)
        stop.set()
        await repeater
        row = await t.verdict()
        by_rpc = sum(1 for call in t.tally.calls if call.method == "RecordStepOutcome")
        row.findings.notes.append(
            f"{t.ledger.duplicates} of {t.ledger.records} outcome records were repeats; "
            f"{by_rpc} outcomes recorded again by RecordStepOutcome"
        )
        return row


async def concurrent_producers(ctx: Context) -> Row:
    """Every write of the workers spread over 50 producers writing at once (each an idempotent
    producer of its own): the outcomes of a step arrive interleaved from all of them."""
    count = ctx.profile.producers
    async with trial(ctx, "concurrent-producers", producers=count) as t:
        t.start()
        await t.mid_run()
        await asyncio.sleep(ctx.profile.after)
        row = await t.verdict()
        row.findings.notes.append(f"{count} producers")
        return row
