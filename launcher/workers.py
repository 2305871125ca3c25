"""Demo workers: stand-ins for the spellchecker, NLP, CJ and AI-feedback services.

They take every ``StepCommand`` and report an ``EssayStepOutcome`` per essay (with the command's
run and attempt), failing a fixed share of essays. Which essays fail is a hash of (batch, step,
essay, and the attempt from the second on), so a rerun fails the same ones and a retry fails
others; an outcome's event id is its command's followed by the essay id, so a redelivered
command reports the same outcomes. They follow ``RunCancelled``: a command of a cancelled run's
attempt (or an earlier one) is dropped. Steps named "silent" are never answered, which shows a
step timing out.

They are also the load generator of ``bench/pipeline.py``, so they must cost far less than the
servers they feed: each command's outcomes are built from one serialized template (only the
essay, its event id and, for a failure, the outcome change) and written as raw records, one
Kafka batch per partition. ``python -m launcher.workers`` runs them on their own, against the
backends of the environment, as a member of the ``demo-workers`` consumer group.

Like real workers must, they carry the trace on: each outcome's ``traceparent`` header is the
span that processed its command (with tracing on, ``Tracing.consumer``), else the command's own.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import sys
from collections.abc import Collection, Sequence

from prometheus_client import CollectorRegistry

from generated.huleedu.events.v1 import events_pb2
from mesh.app import open_bus
from mesh.events import envelope
from mesh.events.bus import Message, OutgoingRecord, RecordWriter
from mesh.events.topics import COMMAND_KINDS, EventKind, topic_name
from mesh.runtime import configure_logging, run, usage_errors
from mesh.settings import (
    BackendSettings,
    ServerSettings,
    TelemetrySettings,
    backends_from_env,
    from_env,
)
from mesh.tracing import propagation
from mesh.tracing.provider import open_tracing

log = logging.getLogger(__name__)

GROUP = "demo-workers"
COMMANDS = list(dict.fromkeys(COMMAND_KINDS.values()))
TOPICS = [*COMMANDS, EventKind.RUN_CANCELLED]  # what the workers subscribe to
ACCEPTED = frozenset({"step_command", "run_cancelled"})  # payload field names
_FAILURE = events_pb2.ErrorDetail(code="DEMO_FAILURE", message="demo worker failed it")


def fails(batch_id: str, step: str, essay_id: str, failure_rate: float, attempt: int = 1) -> bool:
    """Whether the demo fails this essay in this step (stable across runs; each attempt of a
    retried run draws again)."""
    if failure_rate <= 0:
        return False
    key = f"{batch_id}\x00{step}\x00{essay_id}" + (f"\x00{attempt}" if attempt > 1 else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < failure_rate


class DemoWorkers:
    """A ``mesh.events.bus.BatchHandler`` answering step commands with outcomes."""

    def __init__(
        self,
        writer: RecordWriter,
        failure_rate: float = 0.0,
        delay: float = 0.0,
        namespace: str = "",
        silent: Collection[str] = (),
    ) -> None:
        self._writer = writer
        self._failure_rate = failure_rate
        self._delay = delay
        self._topic = topic_name(EventKind.ESSAY_STEP_OUTCOME, namespace)
        self._silent = frozenset(silent)
        self._cancelled: dict[str, int] = {}  # run id -> the attempt cancelled

    async def __call__(self, messages: Sequence[Message]) -> None:
        records: list[OutgoingRecord] = []
        for message in messages:
            if message.envelope.HasField("run_cancelled"):
                cancelled = message.envelope.run_cancelled
                self._cancelled[cancelled.run_id] = max(cancelled.attempt, 1)
        for message in messages:
            if not message.envelope.HasField("step_command"):
                continue
            command = message.envelope.step_command
            if command.step in self._silent:
                log.info("demo %s worker: silent, ignoring the command", command.step)
                continue
            if max(command.attempt, 1) <= self._cancelled.get(command.run_id, 0):
                log.info("demo %s worker: run %s cancelled, dropped", command.step, command.run_id)
                continue
            cause = message.trace or propagation.header(message.record.headers)
            records += self._outcomes(command, message.envelope, cause)
            log.info(
                "demo %s worker: %d essays of batch %s",
                command.step,
                len(command.essays),
                command.batch_id,
            )
        if self._delay:
            await asyncio.sleep(self._delay)  # lets a watcher see each step in progress
        await self._writer.write(records)

    def _outcomes(
        self, command: events_pb2.StepCommand, received: events_pb2.EventEnvelope, trace: str
    ) -> list[OutgoingRecord]:
        template = envelope.build(
            events_pb2.EssayStepOutcome(
                batch_id=command.batch_id,
                step=command.step,
                run_id=command.run_id,
                outcome=events_pb2.STEP_OUTCOME_SUCCEEDED,
                attempt=max(command.attempt, 1),
            ),
            source_service=f"demo-{command.step}-worker",
            event_id="template",
            correlation_id=received.correlation_id or None,
        )
        key = command.batch_id.encode()
        event = events_pb2.EventEnvelope()
        records = []
        for essay in command.essays:
            event.CopyFrom(template)
            event.event_id = f"{received.event_id}:{essay.essay_id}"
            outcome = event.essay_step_outcome
            outcome.essay_id = essay.essay_id
            attempt = max(command.attempt, 1)
            if fails(command.batch_id, command.step, essay.essay_id, self._failure_rate, attempt):
                outcome.outcome = events_pb2.STEP_OUTCOME_FAILED
                outcome.error.CopyFrom(_FAILURE)
            records.append(
                OutgoingRecord(
                    self._topic,
                    envelope.encode(event),
                    key,
                    tuple(envelope.headers(event, trace)),
                )
            )
        return records


async def _serve(
    args: argparse.Namespace,
    backends: BackendSettings,
    telemetry: TelemetrySettings,
    stop: asyncio.Event,
) -> None:
    tracing = open_tracing(telemetry, GROUP)
    async with open_bus(backends, GROUP, CollectorRegistry()) as bus:
        workers = bus.consumer(
            GROUP,
            TOPICS,
            tracing.consumer(
                DemoWorkers(
                    bus, args.failure_rate, args.delay, backends.kafka_namespace, args.silent_step
                )
            ),
            service=GROUP,
            accept=ACCEPTED,
        )
        await workers.start()
        task = asyncio.create_task(workers.run(), name=GROUP)
        try:
            await stop.wait()
        finally:
            await workers.stop()
            await asyncio.gather(task, return_exceptions=True)
            await workers.close()
            await asyncio.to_thread(tracing.close)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m launcher.workers",
        description="Demo workers on their own: answer every StepCommand on the Kafka of "
        "KAFKA_BOOTSTRAP_SERVERS (with REDIS_URL and DATABASE_URL set, as for the servers).",
    )
    parser.add_argument("--failure-rate", type=float, default=0.0, help="share of essays failed")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds a command takes")
    parser.add_argument(
        "--silent-step",
        action="append",
        default=[],
        metavar="STEP",
        help="never answer this step's commands (it times out); repeatable",
    )
    args = parser.parse_args(argv)
    with usage_errors(parser):
        backends = backends_from_env(os.environ)
        server = from_env(ServerSettings, os.environ)
        telemetry = from_env(TelemetrySettings, os.environ)
        configure_logging(server.log_level, server.log_format)
    return run(lambda stop: _serve(args, backends, telemetry, stop), server)


if __name__ == "__main__":
    sys.exit(main())
