"""PostgreSQL trouble as this service reports it: ``BackendUnavailable("postgresql")``.

Only errors that say the database cannot be used right now are translated (no connection,
shutdown, pool timeout, a transaction rolled back by a deadlock or serialization failure); any
other database error is a bug and stays what it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from mesh.errors import BackendUnavailable

BACKEND = "postgresql"

UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.InsufficientResourcesError,
)


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """Raise ``BackendUnavailable`` for the database errors that mean "try again later"."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise BackendUnavailable(BACKEND, f"{type(exc).__name__}: {exc}") from exc
