"""Both services tell "PostgreSQL cannot be used now" from a bad statement with one list
(``mesh.postgres.pool.TRANSIENT_ERRORS``): the first becomes their backend-unavailable error
(UNAVAILABLE to a caller, a retry to a consumer), the second stays the bug it is."""

from __future__ import annotations

import asyncpg
import pytest

from batch_server.store.errors import translated
from conductor_server.store.errors import StateBackendUnavailable
from conductor_server.store.postgres import _unavailable
from mesh.errors import BackendUnavailable

UNAVAILABLE_NOW = [
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError(),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
    asyncpg.InterfaceError("connection is closed"),
    # what asyncpg raises for a connection the server ended mid-exchange at its shutdown
    asyncpg.exceptions.InternalClientError(
        "cannot switch to state 11; another operation (2) is in progress"
    ),
    asyncpg.exceptions.SerializationError("could not serialize access"),
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
]
BUGS = [
    asyncpg.exceptions.UndefinedTableError('relation "nope" does not exist'),
    asyncpg.exceptions.UniqueViolationError("duplicate key value"),
    ValueError("not a database error"),
]


@pytest.mark.parametrize("error", UNAVAILABLE_NOW, ids=lambda e: type(e).__name__)
async def test_postgres_unavailable_now_is_a_backend_error_in_both_services(
    error: Exception,
) -> None:
    with pytest.raises(BackendUnavailable) as batch:
        async with translated():
            raise error
    with pytest.raises(StateBackendUnavailable) as conductor, _unavailable():
        raise error
    for raised in (batch.value, conductor.value):
        assert raised.backend == "postgresql"
        assert raised.retriable
        assert raised.__cause__ is error


@pytest.mark.parametrize("error", BUGS, ids=lambda e: type(e).__name__)
async def test_a_bad_statement_stays_what_it_is_in_both_services(error: Exception) -> None:
    with pytest.raises(type(error)):
        async with translated():
            raise error
    with pytest.raises(type(error)), _unavailable():
        raise error
