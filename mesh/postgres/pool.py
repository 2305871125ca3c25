"""A server's PostgreSQL connection pool: opened at start-up, probed, closed in bounded time."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from mesh.postgres.schema import apply_migrations
from mesh.runtime import StartupError, start_within

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 10.0
MIGRATION_TIMEOUT = 60.0

# Client failures that mean "PostgreSQL is unavailable now", as opposed to a bad statement
# (both services translate these, and only these, into their backend-unavailable errors).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes TimeoutError and refused connections
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # the connection or the pool closed under the call
    # A connection the server ended (its shutdown) in the middle of an exchange: asyncpg's
    # protocol cannot go on from where it was ("cannot switch to state ...").
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock
)


_CLAIM = """
INSERT INTO mesh_deployment (namespace) VALUES ($1) ON CONFLICT (singleton) DO NOTHING;
"""
_OWNER = "SELECT namespace FROM mesh_deployment"


async def _keep_session(conn: Any) -> None:
    """Return a connection to the pool as it is, without asyncpg's default reset query.

    The default (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) is one more
    round trip on every release, and nothing here leaves session state behind: no code sets
    session settings or opens cursors outside a transaction; ``mesh.postgres.listen`` unlistens
    before it releases its connection, or closes it; the migrations reset theirs once (their
    advisory lock, any setting), or close it. The pool still rolls back a transaction left open
    and drops listeners before calling this.
    """


@asynccontextmanager
async def postgres_pool(
    dsn: str,
    size: int,
    migrations: dict[str, str],
    namespace: str | None = None,
    within: float = CONNECT_TIMEOUT,
    *,
    password: str = "",
    tls_ca_file: str = "",
) -> AsyncIterator[Any]:
    """An asyncpg pool with ``migrations`` applied (source name -> package); with a
    ``namespace`` (the mesh's migrations among them), on a database that belongs to it
    (claimed by the first server to start on it).

    ``password`` (when not in the DSN) and ``tls_ca_file`` (verified TLS: the server's
    certificate must be signed by that CA and name its host; TLS may also be asked for in the
    DSN, ``?sslmode=verify-full&sslrootcert=...``) are the connection's credentials; neither
    is ever logged. ``StartupError`` when PostgreSQL cannot be reached ``within`` seconds, or
    when the database belongs to another namespace. On exit the pool closes; a connection still
    checked out after ``CLOSE_TIMEOUT`` is terminated (asyncpg's ``close`` would wait for it
    however long that takes).
    """
    options: dict[str, Any] = {}
    if password:
        options["password"] = password
    try:
        if tls_ca_file:
            options["ssl"] = ssl.create_default_context(cafile=tls_ca_file)
        pool = await asyncio.wait_for(
            asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=size,
                command_timeout=30,
                reset=_keep_session,
                **options,
            ),
            within,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise StartupError(f"PostgreSQL unreachable at {redact(dsn)}: {exc!r}") from exc
    log.info("connected to PostgreSQL at %s (pool %d)", redact(dsn), size)
    try:
        await start_within(
            "PostgreSQL migrations", lambda: apply_migrations(pool, migrations), MIGRATION_TIMEOUT
        )
        if namespace is not None:
            await _claim(pool, namespace)
        yield pool
    finally:
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("PostgreSQL pool still had a connection in use after %.0f s", CLOSE_TIMEOUT)
            pool.terminate()


async def _claim(pool: Any, namespace: str) -> None:
    """Claim the database for ``namespace``, or fail start-up if another one has it."""
    await pool.execute(_CLAIM, namespace)
    owner = await pool.fetchval(_OWNER)
    if owner != namespace:
        raise StartupError(
            f"this database belongs to the deployment with KAFKA_NAMESPACE={owner!r}, not "
            f"{namespace!r}: give each namespace a database of its own"
        )


def probe(pool: Any) -> Callable[[], Awaitable[object]]:
    """A health probe: one ``SELECT 1`` on a pooled connection."""

    async def check() -> object:
        async with pool.acquire(timeout=2) as conn:
            return await conn.fetchval("SELECT 1")

    return check


def redact(url: str) -> str:
    """``url`` without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in credentials else url
