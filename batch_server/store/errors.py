"""PostgreSQL trouble as this service reports it: ``BackendUnavailable("postgresql")``.

Only errors that say the database cannot be used right now are translated
(``mesh.postgres.pool.TRANSIENT_ERRORS``: no connection, shutdown, pool timeout, a transaction
rolled back by a deadlock or serialization failure); any other database error is a bug and stays
what it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mesh.errors import BackendUnavailable
from mesh.postgres.pool import TRANSIENT_ERRORS

BACKEND = "postgresql"


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """Raise ``BackendUnavailable`` for the database errors that mean "try again later"."""
    try:
        yield
    except TRANSIENT_ERRORS as exc:
        raise BackendUnavailable(BACKEND, f"{type(exc).__name__}: {exc}") from exc
