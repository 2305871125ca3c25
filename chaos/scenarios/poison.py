"""Poison of every kind on the consumed topics, mid-run, one of them too large to dead-letter
with its bytes: every poison record is dead-lettered, no good one is, the partitions move on,
and the oversized one is listed, shown and replayed with ``huleedu dlq ... --database``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import sys
import time
from typing import Any

import asyncpg

from chaos.check import kafka
from chaos.check.findings import Findings
from chaos.ledger import OutcomeKey, Position
from chaos.poison import (
    OVERSIZED_BYTES,
    Poison,
    completion_poison,
    conflicting,
    not_expected,
    outcome_poison,
    oversized,
    send,
)
from chaos.report import Row
from chaos.trial import Context, Trial, trial
from generated.huleedu.conductor.v1 import conductor_pb2
from generated.huleedu.events.v1 import events_pb2
from mesh.events.admin import read_topic
from mesh.events.deadletter import H_REPLAY_OF
from mesh.events.topics import EventKind, topic_name

CLI_TIMEOUT = 120.0


async def _counted(t: Trial) -> tuple[OutcomeKey, bool]:
    """An outcome of the load that PostgreSQL has counted."""
    conn = await asyncpg.connect(t.mesh.database_url)
    try:
        while True:
            row = await conn.fetchrow(
                "SELECT batch_id, step, essay_id, outcome FROM essay_step_outcomes LIMIT 1"
            )
            if row is not None:
                key = (row["batch_id"], row["step"], row["essay_id"])
                return key, row["outcome"] == "succeeded"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def _registered(t: Trial) -> str:
    """A batch registered with the conductor only (no run): nothing is expected of it yet."""
    batch_id = f"chaos-poison-{secrets.token_hex(4)}"
    request = conductor_pb2.RegisterBatchRequest(
        batch_id=batch_id, essay_ids=["p-1", "p-2"], flags={"prompt_attached": True}
    )
    await next(iter(t.stubs.conductors.values())).RegisterBatch(request, timeout=10)
    return batch_id


async def _lettered(t: Trial, position: Position, within: float) -> kafka.DeadLetter:
    bootstrap, deadline = t.ctx.backends.kafka_bootstrap, time.monotonic() + within
    while time.monotonic() < deadline:
        outcomes = [EventKind.ESSAY_STEP_OUTCOME]
        for letter in await kafka.dead_letters(bootstrap, t.mesh.namespace, outcomes):
            if letter.original == position:
                return letter
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no dead letter of {position} within {within:.0f} s")


async def _huleedu(t: Trial, *args: str) -> str:
    """``huleedu dlq ...`` (the CLI, as a process) on the outcome topic; its output."""
    topic = topic_name(EventKind.ESSAY_STEP_OUTCOME, t.mesh.namespace)
    command = [sys.executable, "-m", "clients", "dlq", args[0], topic, *args[1:]]
    command += [
        "--kafka",
        t.ctx.backends.kafka_bootstrap,
        "--database",
        t.mesh.database_url,
        "--json",
    ]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"huleedu dlq {' '.join(args)} exited {proc.returncode}: {err.decode()}")
    return out.decode()


async def _operate(t: Trial, letter: kafka.DeadLetter, found: Findings) -> None:
    """List, show and replay the oversized poison's dead letter with the CLI; note where the
    replayed record went (it is poison again)."""
    _, partition, offset = letter.dlq
    where = ["--partition", str(partition), "--offset", str(offset)]
    listed = [json.loads(line) for line in (await _huleedu(t, "list")).splitlines()]
    if not any((e["partition"], e["offset"]) == (partition, offset) for e in listed):
        found.problem(f"huleedu dlq list does not list {letter.dlq}")
    shown: dict[str, Any] = json.loads(await _huleedu(t, "show", *where))
    dead = shown["envelope"]["deadLetter"]
    if (dead.get("payloadSize"), dead.get("payloadStorage")) != (
        str(OVERSIZED_BYTES),
        events_pb2.PayloadStorage.Name(events_pb2.PAYLOAD_STORAGE_POSTGRESQL),
    ):
        found.problem(f"huleedu dlq show: size or storage wrong: {dead.get('payloadSize')}")
    replayed = json.loads(await _huleedu(t, "replay", *where))
    if replayed != {"replayed": 1}:
        found.problem(f"huleedu dlq replay said {replayed}")
    topic = topic_name(EventKind.ESSAY_STEP_OUTCOME, t.mesh.namespace)
    again = [
        r
        for r in await read_topic(t.ctx.backends.kafka_bootstrap, topic)
        if any(name == H_REPLAY_OF for name, _ in r.headers)
    ]
    if len(again) != 1 or hashlib.sha256(again[0].value).hexdigest() != _OVERSIZED_SHA:
        found.problem(f"the replay is not the original bytes on {topic} ({len(again)} replays)")
    for record in again:
        t.ledger.poisoned((record.topic, record.partition, record.offset), "replayed oversized")
    found.notes.append("huleedu dlq list, show and replay --database: the oversized poison")


_OVERSIZED_SHA = hashlib.sha256(b"\xff" * OVERSIZED_BYTES).hexdigest()


def _errors(poisons: dict[Position, Poison], letters: list[kafka.DeadLetter]) -> list[str]:
    """Letters whose error is not the one their poison must cause."""
    return [
        f"{poisons[letter.original].kind}: {letter.error}"
        for letter in letters
        if letter.original in poisons and not letter.error.endswith(poisons[letter.original].error)
    ]


async def poison(ctx: Context) -> Row:
    """Every poison kind mid-run, the oversized one first."""
    async with trial(ctx, "poison") as t:
        t.start()
        await t.mid_run()
        found = Findings()
        batch, essays = next(iter(t.ledger.batches.items()))
        made = [
            oversized(batch),
            *outcome_poison(batch, essays[0]),
            not_expected(await _registered(t), "p-1"),
            conflicting(*await _counted(t)),
            *completion_poison(batch),
        ]
        positions = await send(ctx.backends.kafka_bootstrap, t.mesh.namespace, made, t.ledger)
        poisons = dict(zip(positions, made, strict=True))
        letter = await _lettered(t, next(iter(poisons)), ctx.profile.settle)
        await _operate(t, letter, found)
        await asyncio.sleep(ctx.profile.after)
        row = await t.verdict(
            recover=letter.seconds,
            recover_what="oversized poison's timestamp -> its dead letter's failed_at",
            findings=found,
        )
        letters = await kafka.dead_letters(ctx.backends.kafka_bootstrap, t.mesh.namespace)
        if wrong := _errors(poisons, letters):
            row.findings.problem(f"dead letters with an unexpected error: {wrong}")
        row.findings.notes.append(f"{len(made)} poison kinds: {', '.join(p.kind for p in made)}")
        return row
