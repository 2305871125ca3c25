"""``huleedu keys new|hash``: API keys for the servers' key sources (a file or PostgreSQL).

``keys new`` prints the key-file line (JSON, to append to AUTH_KEYS_FILE) on stdout and the key
itself, once, on stderr; its output is that line in every mode.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from typing import Any

from clients.cli.dlq import postgres_pool
from clients.cli.errors import CommandError
from clients.cli.output import Output
from mesh.security import keys


async def serve(args: argparse.Namespace, out: Output) -> None:
    if args.action == "hash":
        key = sys.stdin.readline().strip()
        if not key:
            raise CommandError("keys hash reads a key from stdin")
        print(keys.key_digest(key))
        return
    key = keys.new_key()
    digest = keys.key_digest(key)
    try:
        line = keys.entry_line(args.principal, digest, args.scope, args.expires)
    except keys.KeySourceError as exc:
        raise CommandError(str(exc).removeprefix("new key:1: ")) from None
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
    async with postgres_pool(dsn) as pool:
        try:
            await pool.execute(INSERT_KEY, principal, digest, scopes, expires_at)
        except asyncpg.UndefinedTableError:
            raise CommandError(
                "no api_keys table in that database: start a server on it once (its migrations "
                "create it)"
            ) from None


def add_commands(actions: Any, common: argparse.ArgumentParser) -> None:
    """``keys new`` and ``keys hash``."""
    new = actions.add_parser(
        "new",
        parents=[common],
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
    actions.add_parser(
        "hash", parents=[common], help="the SHA-256 of a key read from stdin, as a key file stores"
    )
