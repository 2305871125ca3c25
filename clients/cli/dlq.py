"""``huleedu dlq list|show|replay TOPIC``: dead letters of a topic, straight from Kafka.

``show`` prints each chosen letter as a JSON document (its envelope and, where it decodes, the
original event) in every mode; ``list`` and ``replay`` read as a table and a sentence, or as
JSON lines and ``{"replayed": n}`` with ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from clients.cli.errors import CommandError, Unreachable
from clients.cli.output import Output, table
from generated.huleedu.events.v1 import events_pb2

KAFKA_SETTING = "--kafka or KAFKA_BOOTSTRAP_SERVERS"
DATABASE_SETTING = "--database or DATABASE_URL"


@contextlib.contextmanager
def reaching_kafka(bootstrap: str) -> Iterator[None]:
    from aiokafka.errors import KafkaConnectionError, KafkaError

    try:
        yield
    except KafkaConnectionError as exc:
        raise Unreachable("Kafka", bootstrap, KAFKA_SETTING, "no broker answered") from exc
    except KafkaError as exc:
        raise CommandError(f"Kafka at {bootstrap}: {exc}") from exc


@contextlib.asynccontextmanager
async def postgres_pool(dsn: str) -> AsyncIterator[Any]:
    """A one-connection pool on ``dsn``; ``Unreachable`` when PostgreSQL does not answer."""
    import asyncpg

    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    except (OSError, asyncpg.PostgresError) as exc:
        from mesh.postgres.pool import redact

        raise Unreachable("PostgreSQL", redact(dsn), DATABASE_SETTING, str(exc)) from exc
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def _vault(database: str, letters: Sequence[Any]) -> AsyncIterator[Any]:
    """The PostgreSQL vault of oversized dead letters, when one of ``letters`` needs it."""
    from mesh.postgres.vault import PostgresPayloadVault

    needed = any(r.letter.payload_storage == events_pb2.PAYLOAD_STORAGE_POSTGRESQL for r in letters)
    dsn = database or os.environ.get("DATABASE_URL", "")
    if not needed or not dsn:
        yield None
        return
    async with postgres_pool(dsn) as pool:
        yield PostgresPayloadVault(pool)


async def serve(args: argparse.Namespace, out: Output) -> None:
    bootstrap = args.kafka or os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    if not bootstrap:
        raise CommandError(f"dlq commands need Kafka: set {KAFKA_SETTING}")
    with reaching_kafka(bootstrap):
        await _dead_letters(args, bootstrap, out)


def _listed(letters: Sequence[Any], out: Output) -> None:
    rows = [
        {
            "offset": r.offset,
            "partition": r.partition,
            "original_offset": r.letter.offset,
            "error": r.letter.error_info.type,
            "message": r.letter.error_info.message,
        }
        for r in letters
    ]
    if out.as_json:
        for row in rows:
            print(json.dumps(row))
        return
    if not rows:
        out.line("No dead letters.")
        return
    grid = table(">partition", ">offset", ">original offset", "error", "message")
    for row in rows:
        grid.add_row(*(str(row[k]) for k in ("partition", "offset", "original_offset")),
                     row["error"], row["message"])  # fmt: skip
    out.line(grid)  # type: ignore[arg-type]


def _chosen(args: argparse.Namespace, letters: Sequence[Any]) -> list[Any]:
    chosen = [
        r
        for r in letters
        if (args.partition is None or r.partition == args.partition)
        and (args.offset is None or r.offset == args.offset)
    ]
    at = " ".join(
        f"{name} {value}"
        for name, value in (("partition", args.partition), ("offset", args.offset))
        if value is not None
    )
    if at and not chosen:
        raise CommandError(f"no dead letter of {args.topic} at {at}")
    partitions = sorted({r.partition for r in chosen})
    if args.offset is not None and len(partitions) > 1:
        raise CommandError(
            f"offset {args.offset} is in DLQ partitions {partitions}: pass --partition too"
        )
    return chosen


async def _dead_letters(args: argparse.Namespace, bootstrap: str, out: Output) -> None:
    from mesh.events import deadletter
    from mesh.events.producer import Producer
    from mesh.events.security import KafkaSecurity
    from mesh.settings import BackendSettings, from_env

    # SASL and TLS as the servers take them: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*
    security = KafkaSecurity.of(from_env(BackendSettings, os.environ))
    letters = await deadletter.list_dead_letters(bootstrap, args.topic, security=security)
    if args.action == "list":
        _listed(letters, out)
        return
    chosen = _chosen(args, letters)
    async with _vault(args.database, chosen) as vault:
        if args.action == "show":
            for r in chosen:
                kept = r.letter.payload_storage != events_pb2.PAYLOAD_STORAGE_UNSPECIFIED
                try:
                    original = await deadletter.original_value(r, vault) if kept else None
                except deadletter.OriginalNotKept as exc:
                    print(f"note: {exc}", file=sys.stderr)
                    original = None
                print(deadletter.show(r, original))
            return
        async with Producer(bootstrap, security=security) as producer:
            try:
                count = await deadletter.replay(producer, chosen, vault)
            except deadletter.OriginalNotKept as exc:
                raise CommandError(str(exc)) from exc
    if out.as_json:
        print(json.dumps({"replayed": count}))
    else:
        out.line(f"Replayed {count} dead letter{'s' * (count != 1)} onto {args.topic}.")


def add_arguments(dlq: argparse.ArgumentParser) -> None:
    dlq.add_argument("action", choices=["list", "show", "replay"])
    dlq.add_argument("topic", help="the original topic, e.g. huleedu.essay.step.outcome.v1")
    dlq.add_argument(
        "--partition", type=int, default=None, help="only dead letters of this DLQ partition"
    )
    dlq.add_argument(
        "--offset",
        type=int,
        default=None,
        help="only the dead letter at this DLQ offset (with --partition when the DLQ has more "
        "than one); list shows both",
    )
    dlq.add_argument(
        "--kafka", default="", help="bootstrap servers (default $KAFKA_BOOTSTRAP_SERVERS)"
    )
    dlq.add_argument(
        "--database",
        default="",
        help="PostgreSQL DSN of the service that dead-lettered, where an oversized letter's "
        "original value is kept (default $DATABASE_URL)",
    )
