"""``huleedu``: the operators' command line over the SDK (and Kafka, for dead letters).

Every command prints JSON (protobuf JSON mapping), so its output pipes into ``jq``. Failed RPCs
print the status code, message and decoded details to stderr and exit 1; when the reader of its
output goes away (``| head``) it stops quietly with status 141, as a shell reports SIGPIPE.

    huleedu batch create --flag prompt_attached "First essay." "Second essay."
    huleedu batch start BATCH_ID comprehensive
    huleedu batch watch BATCH_ID
    huleedu dlq list huleedu.essay.step.outcome.v1
    huleedu dlq replay huleedu.essay.step.outcome.v1 --partition 2 --offset 0
    huleedu keys new --principal ops-alice --scope batches:read >> keys.jsonl

Credentials (servers with authentication on): the API key from ``HULEEDU_API_KEY`` or the file
named by ``--api-key-file`` / ``HULEEDU_API_KEY_FILE`` (never an argument: the process list
would show it); TLS with ``--tls`` or ``--tls-ca-file``, mutual TLS with ``--tls-cert-file``
and ``--tls-key-file`` (or the ``HULEEDU_TLS*`` variables).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from clients.batch import BatchClient
from clients.channel import Credentials, read_key
from clients.conductor import ConductorClient
from clients.enums import RunStatus, RunStepStatus
from clients.errors import RpcError
from generated.huleedu.events.v1 import events_pb2
from mesh.security import keys

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, None]]


def _print(message: Message) -> None:
    print(json_format.MessageToJson(message, indent=2, always_print_fields_with_no_presence=False))


def _print_or_id(message: Message, identifier: str, quiet: bool) -> None:
    if quiet:
        print(identifier)
    else:
        _print(message)


def credentials(args: argparse.Namespace) -> Credentials:
    """The environment's credentials, each overridden by its command-line option."""
    env = Credentials.from_env(os.environ)
    return Credentials(
        api_key=read_key(args.api_key_file) if args.api_key_file else env.api_key,
        tls=args.tls or env.tls,
        ca_file=args.tls_ca_file or env.ca_file,
        cert_file=args.tls_cert_file or env.cert_file,
        key_file=args.tls_key_file or env.key_file,
        server_name=args.tls_server_name or env.server_name,
    )


async def _batch(args: argparse.Namespace) -> None:
    async with BatchClient(args.batch_address, args.timeout, credentials(args)) as client:
        if args.action == "create":
            texts = args.texts or [line for line in sys.stdin.read().split("\n\n") if line.strip()]
            flags = dict.fromkeys(args.flag, True)
            batch = await client.create_batch(
                texts, request_id=args.request_id, name=args.name, flags=flags
            )
            _print_or_id(batch, batch.batch_id, args.quiet)
        elif args.action == "start":
            started = await client.start_pipeline(args.batch_id, args.pipeline, args.request_id)
            _print_or_id(started, started.run.run_id, args.quiet)
        elif args.action == "status":
            _print(await client.get_batch_status(args.batch_id))
        elif args.action == "list":
            _print(await client.list_batches(args.page_size, args.page_token))
        elif args.action == "watch":
            async for update in client.watch_batch(args.batch_id, args.run_id):
                run = update.run
                steps = ", ".join(
                    f"{s.step}={s.succeeded}+{s.failed}/{s.total} {RunStepStatus(s.status)}"
                    for s in run.steps
                )
                status = RunStatus(run.status)
                print(f"#{update.sequence} run {run.run_id} {status}: {steps}", flush=True)
        elif args.action == "spellcheck":
            _print(await client.trigger_spellcheck(args.text))


async def _conductor(args: argparse.Namespace) -> None:
    async with ConductorClient(args.conductor_address, args.timeout, credentials(args)) as client:
        if args.action == "pipelines":
            _print(await client.list_pipelines())
        elif args.action == "resolve":
            flags = dict.fromkeys(args.flag, True)
            _print(await client.resolve_pipeline(args.batch_id, args.target, flags, dry_run=True))
        elif args.action == "state":
            _print(await client.get_batch_pipeline_state(args.batch_id))


async def _dlq(args: argparse.Namespace) -> None:
    from mesh.events import deadletter
    from mesh.events.producer import Producer
    from mesh.events.security import KafkaSecurity
    from mesh.settings import BackendSettings, from_env

    bootstrap = args.kafka or os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    if not bootstrap:
        raise SystemExit("dlq commands need --kafka or KAFKA_BOOTSTRAP_SERVERS")
    # SASL and TLS as the servers take them: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*
    security = KafkaSecurity.of(from_env(BackendSettings, os.environ))
    letters = await deadletter.list_dead_letters(bootstrap, args.topic, security=security)
    if args.action == "list":
        for r in letters:
            letter = r.letter
            print(
                json.dumps(
                    {
                        "offset": r.offset,
                        "partition": r.partition,
                        "original_offset": letter.offset,
                        "error": letter.error_info.type,
                        "message": letter.error_info.message,
                    }
                )
            )
        return
    chosen = [
        r
        for r in letters
        if (args.partition is None or r.partition == args.partition)
        and (args.offset is None or r.offset == args.offset)
    ]
    where = " ".join(
        f"{name} {value}"
        for name, value in (("partition", args.partition), ("offset", args.offset))
        if value is not None
    )
    if where and not chosen:
        raise SystemExit(f"no dead letter of {args.topic} at {where}")
    partitions = sorted({r.partition for r in chosen})
    if args.offset is not None and len(partitions) > 1:
        raise SystemExit(
            f"offset {args.offset} is in DLQ partitions {partitions}: pass --partition too"
        )
    async with _vault(args, chosen) as vault:
        if args.action == "show":
            for r in chosen:
                kept = r.letter.payload_storage != events_pb2.PAYLOAD_STORAGE_UNSPECIFIED
                try:
                    original = await deadletter.original_value(r, vault) if kept else None
                except deadletter.OriginalNotKept as exc:
                    print(f"note: {exc}", file=sys.stderr)
                    original = None
                print(deadletter.show(r, original))
        elif args.action == "replay":
            async with Producer(bootstrap, security=security) as producer:
                try:
                    count = await deadletter.replay(producer, chosen, vault)
                except deadletter.OriginalNotKept as exc:
                    raise SystemExit(str(exc)) from exc
            print(json.dumps({"replayed": count}))


@contextlib.asynccontextmanager
async def _vault(args: argparse.Namespace, letters: Sequence[Any]) -> AsyncIterator[Any]:
    """The PostgreSQL vault of oversized dead letters, when one of ``letters`` needs it."""
    from mesh.postgres.vault import PostgresPayloadVault

    needed = any(r.letter.payload_storage == events_pb2.PAYLOAD_STORAGE_POSTGRESQL for r in letters)
    dsn = args.database or os.environ.get("DATABASE_URL", "")
    if not needed or not dsn:
        yield None
        return
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        yield PostgresPayloadVault(pool)
    finally:
        await pool.close()


async def _keys(args: argparse.Namespace) -> None:
    if args.action == "hash":
        key = sys.stdin.readline().strip()
        if not key:
            raise SystemExit("keys hash reads a key from stdin")
        print(keys.key_digest(key))
        return
    key = keys.new_key()
    digest = keys.key_digest(key)
    try:
        line = keys.entry_line(args.principal, digest, args.scope, args.expires)
    except keys.KeySourceError as exc:
        raise SystemExit(str(exc).removeprefix("new key:1: ")) from None
    if args.database:
        await _insert_key(args.database, args.principal, digest, args.scope, args.expires)
    if args.key_file:
        fd = os.open(args.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(key + "\n")
        shown = f"written to {args.key_file} (mode 600)"
    else:
        shown = key
    print(f"API key of {args.principal}, shown once: {shown}", file=sys.stderr)
    print(line)


async def _insert_key(
    dsn: str, principal: str, digest: str, scopes: list[str], expires: str
) -> None:
    import asyncpg

    from mesh.security.keytable import INSERT_KEY

    expiry = keys.parse_expiry(expires or None)
    expires_at = None if expiry is None else datetime.fromtimestamp(expiry, UTC)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(INSERT_KEY, principal, digest, scopes, expires_at)
    except asyncpg.UndefinedTableError:
        raise SystemExit(
            "no api_keys table in that database: start a server on it once (its migrations "
            "create it)"
        ) from None
    finally:
        await conn.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="huleedu", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--batch-address", default=os.environ.get("BATCH_ADDRESS", "127.0.0.1:5000")
    )
    parser.add_argument(
        "--conductor-address", default=os.environ.get("CONDUCTOR_ADDRESS", "127.0.0.1:5050")
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="RPC deadline in seconds")
    parser.add_argument(
        "--api-key-file", default="", help="file holding the API key (default $HULEEDU_API_KEY)"
    )
    parser.add_argument("--tls", action="store_true", help="TLS with the system's CAs")
    parser.add_argument("--tls-ca-file", default="", help="PEM CA of the servers (implies TLS)")
    parser.add_argument("--tls-cert-file", default="", help="PEM client certificate (mTLS)")
    parser.add_argument("--tls-key-file", default="", help="its PEM private key")
    parser.add_argument("--tls-server-name", default="", help="name in the server certificate")
    groups = parser.add_subparsers(dest="group", required=True)

    batch = groups.add_parser("batch", help="BatchService: batches and pipeline runs")
    actions = batch.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create", help="create a batch (texts as arguments, or stdin split on blank lines)"
    )
    create.add_argument("texts", nargs="*")
    create.add_argument(
        "--flag", action="append", default=[], help="set a batch flag, e.g. prompt_attached"
    )
    create.add_argument("--name", default="")
    create.add_argument("--request-id", default="", help="idempotency key")
    create.add_argument("-q", "--quiet", action="store_true", help="print only the batch id")
    start = actions.add_parser("start", help="start a pipeline run")
    start.add_argument("batch_id")
    start.add_argument("pipeline")
    start.add_argument("--request-id", default="")
    start.add_argument("-q", "--quiet", action="store_true", help="print only the run id")
    for name in ("status", "watch"):
        sub = actions.add_parser(name, help=f"{name} a batch")
        sub.add_argument("batch_id")
        if name == "watch":
            sub.add_argument("--run-id", default="")
    listing = actions.add_parser("list", help="list batches, newest first")
    listing.add_argument("--page-size", type=int, default=50)
    listing.add_argument("--page-token", default="")
    spell = actions.add_parser("spellcheck", help="trigger a single-essay spellcheck")
    spell.add_argument("text")
    batch.set_defaults(handler=_batch)

    conductor = groups.add_parser("conductor", help="PipelineConductor: definitions and state")
    actions = conductor.add_subparsers(dest="action", required=True)
    actions.add_parser("pipelines", help="list pipeline definitions")
    resolve = actions.add_parser("resolve", help="dry-run a resolution")
    resolve.add_argument("batch_id")
    resolve.add_argument("target")
    resolve.add_argument("--flag", action="append", default=[])
    state = actions.add_parser("state", help="per-step counts of a batch")
    state.add_argument("batch_id")
    conductor.set_defaults(handler=_conductor)

    dlq = groups.add_parser("dlq", help="dead letters of a topic (needs Kafka)")
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
    dlq.set_defaults(handler=_dlq)

    keys_group = groups.add_parser("keys", help="API keys for servers' key sources")
    actions = keys_group.add_subparsers(dest="action", required=True)
    new = actions.add_parser(
        "new",
        help="make a key: its key-file line on stdout (append it to AUTH_KEYS_FILE), the key "
        "itself once on stderr",
    )
    new.add_argument("--principal", required=True, help="who will use it, e.g. ops-alice")
    new.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=sorted(keys.SCOPES),
        help="a scope it grants (repeat for more)",
    )
    new.add_argument("--expires", default="", help="ISO 8601 date or time with offset")
    new.add_argument("--key-file", default="", help="write the key to this new file (mode 600)")
    new.add_argument("--database", default="", help="insert it into api_keys of this DSN")
    actions.add_parser("hash", help="the SHA-256 of a key read from stdin, as a key file stores")
    keys_group.set_defaults(handler=_keys)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        asyncio.run(handler(args))
    except RpcError as exc:
        shown: dict[str, Any] = {"code": exc.code.name, "message": exc.message}
        shown["details"] = [json_format.MessageToDict(d) for d in exc.details]
        print(json.dumps(shown, indent=2), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``huleedu batch watch ID | head``): stop quietly, as other
        # tools do. Point stdout at /dev/null so the interpreter's final flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by the signal
    return 0
