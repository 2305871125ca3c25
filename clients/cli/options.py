"""The command line's shared options: credentials, the environment it reads (which ``--help``
lists), the pipeline names of the shipped definitions, and the parsers of option values."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from clients.channel import Credentials, read_key

SERVER_ENV = (
    ("BATCH_ADDRESS", "the BatchService, host:port (default 127.0.0.1:5000; --batch-address)"),
    ("CONDUCTOR_ADDRESS", "the PipelineConductor (default 127.0.0.1:5050; --conductor-address)"),
    ("HULEEDU_API_KEY", "API key sent on every call (servers with authentication on)"),
    ("HULEEDU_API_KEY_FILE", "file holding the API key (--api-key-file)"),
    ("HULEEDU_TLS", "true: TLS with the system's CAs (--tls)"),
    ("HULEEDU_TLS_CA_FILE", "PEM CA of the servers, implies TLS (--tls-ca-file)"),
    ("HULEEDU_TLS_CERT_FILE", "PEM client certificate, for mutual TLS (--tls-cert-file)"),
    ("HULEEDU_TLS_KEY_FILE", "its PEM private key (--tls-key-file)"),
    ("HULEEDU_TLS_SERVER_NAME", "name in the servers' certificate (--tls-server-name)"),
)
KAFKA_ENV = (
    ("KAFKA_BOOTSTRAP_SERVERS", "Kafka brokers, host:port[,...] (--kafka)"),
    ("KAFKA_NAMESPACE", "topic prefix of the deployment"),
    ("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    ("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD: SASL login"),
    ("KAFKA_SSL_CA_FILE", "KAFKA_SSL_CERT_FILE, KAFKA_SSL_KEY_FILE: TLS to the brokers"),
    ("DATABASE_URL", "PostgreSQL DSN, where oversized dead letters are kept (--database)"),
)
OUTPUT_ENV = (
    ("NO_COLOR", "set: no colours (output that is not a terminal never has any)"),
    ("COLUMNS", "width of tables when the output is not a terminal (default 160)"),
)


def environment(*groups: Sequence[tuple[str, str]]) -> str:
    rows = [row for group in groups for row in group]
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name:<{width}}  {meaning}" for name, meaning in rows]
    return "environment:\n" + "\n".join(lines)


def pipeline_help() -> str:
    """The pipelines (and the flags their steps require) of the shipped definitions, read by the
    conductor's own loader; how to list a server's when the file cannot be read."""
    fallback = "pipelines: list a conductor's with `huleedu conductor pipelines`"
    try:
        from conductor_server.domain.errors import DefinitionError
        from conductor_server.domain.loader import parse_catalog
        from mesh.events.topics import COMMAND_KINDS
        from pipelines import default_definitions

        source = default_definitions()
        catalog = parse_catalog(source.read_text(encoding="utf-8"), str(source), set(COMMAND_KINDS))
    except (ImportError, OSError, DefinitionError):
        return fallback
    width = max(len(p.name) for p in catalog.pipelines)
    lines = [f"  {p.name:<{width}}  {p.description}" for p in catalog.pipelines]
    flags = sorted({flag for step in catalog.steps.values() for flag in step.requires})
    return (
        "pipelines (the shipped definitions; a server's own: `huleedu conductor pipelines`):\n"
        + "\n".join(lines)
        + (f"\nflags steps require: {', '.join(flags)}" if flags else "")
    )


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog is written only when help is shown (reading the pipeline
    definitions costs time every other command need not spend)."""

    def __init__(self, *args: Any, epilog_of: Callable[[], str] | None = None, **kw: Any) -> None:
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kw)
        self.epilog_of = epilog_of

    def format_help(self) -> str:
        if self.epilog_of is not None:
            self.epilog = self.epilog_of()
        return super().format_help()


def add_command(
    actions: Any, common: argparse.ArgumentParser, name: str, run: Any, help: str
) -> argparse.ArgumentParser:
    """A command of a group: ``--json`` from ``common``, ``run`` its coroutine."""
    parser: argparse.ArgumentParser = actions.add_parser(
        name, parents=[common], help=help, description=help
    )
    parser.set_defaults(run=run)
    return parser


def add_connection_options(parser: argparse.ArgumentParser) -> None:
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


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the value may be empty)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def flag_setting(text: str) -> tuple[str, bool]:
    """``NAME`` (true), ``NAME=true`` or ``NAME=false``."""
    name, sep, value = text.partition("=")
    truth = {"true": True, "false": False}.get(value.lower()) if sep else True
    if not name or truth is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME, NAME=true or NAME=false")
    return name, truth


def moment(text: str) -> datetime:
    """An ISO 8601 date or date and time; without an offset it is UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date (2025-09-01) or time (2025-09-01T08:00+02:00)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
