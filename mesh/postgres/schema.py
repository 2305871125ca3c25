"""Numbered SQL migrations, applied at start-up and recorded in ``schema_migrations``.

A migration source is a Python package holding files named ``NNNN_description.sql``. Each source
is recorded under its own name, so several services can share one database: the shared ``mesh``
migrations (the outbox table) are applied once whichever server starts first. Sources are applied
in the order given, so a later source may use what an earlier one created (the services list
``mesh`` first), under an advisory lock, so two replicas starting together do not race.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x48554C45  # "HULE": one advisory lock for every migration run

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    source     TEXT        NOT NULL,
    version    INTEGER     NOT NULL,
    name       TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source, version)
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    source: str
    version: int
    name: str
    sql: str


def discover(source: str, package: str) -> list[Migration]:
    """The migrations of ``package`` in version order; a duplicate version is an error."""
    found: dict[int, Migration] = {}
    for entry in resources.files(package).iterdir():
        match = _FILE.match(entry.name)
        if not match:
            continue
        version = int(match[1])
        if version in found:
            raise ValueError(f"{package}: two migrations numbered {version:04d}")
        found[version] = Migration(source, version, match[2], entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def apply_migrations(pool: Any, sources: dict[str, str]) -> list[Migration]:
    """Apply every pending migration of ``sources`` (name -> package); return those applied."""
    applied: list[Migration] = []
    async with pool.acquire() as conn:
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
            await conn.execute(_BOOKKEEPING)
            for source, package in sources.items():
                done = {
                    row["version"]
                    for row in await conn.fetch(
                        "SELECT version FROM schema_migrations WHERE source = $1", source
                    )
                }
                for migration in discover(source, package):
                    if migration.version in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (source, version, name) "
                            "VALUES ($1, $2, $3)",
                            source,
                            migration.version,
                            migration.name,
                        )
                    log.info(
                        "applied migration %s/%04d_%s", source, migration.version, migration.name
                    )
                    applied.append(migration)
            # asyncpg's full reset, once: the lock released and whatever a migration set undone
            # before the connection serves the pool (which gives connections back as they are)
            await conn.reset()
        except BaseException:
            conn.terminate()  # its session, and the lock with it, ends
            raise
    return applied
