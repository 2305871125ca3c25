"""Keys from PostgreSQL: the ``api_keys`` table (``mesh/postgres/sql/0002_api_keys.sql``).

For deployments whose replicas should share keys without shipping a file to each: the table
is read at start-up (rows that break the rules of ``mesh.security.keys`` fail start-up) and again
every ``interval`` seconds, off the RPC path, with one ``SELECT``. A table that cannot be read
(PostgreSQL down) or holds a bad row keeps the previous keys, with one ERROR line per problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from mesh.postgres.pool import TRANSIENT_ERRORS
from mesh.resource import AsyncResource
from mesh.security.keys import KeyIndex, KeySourceError, build_index

log = logging.getLogger(__name__)

_KEEP_PREVIOUS: tuple[type[BaseException], ...] = (KeySourceError, *TRANSIENT_ERRORS)

SELECT_KEYS = """
SELECT id, principal, sha256, san, scopes, expires_at, rate_limits, max_streams
FROM api_keys ORDER BY id
"""
INSERT_KEY = """
INSERT INTO api_keys (principal, sha256, scopes, expires_at) VALUES ($1, $2, $3, $4)
"""


class KeyTable(AsyncResource):
    """The key index of the ``api_keys`` table of ``pool``'s database."""

    def __init__(self, pool: Any, interval: float = 2.0) -> None:
        self.index = KeyIndex({}, {})
        self._pool = pool
        self._interval = interval
        self._rows: list[tuple[Any, ...]] | None = None
        self._problem = ""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the table (``KeySourceError`` on a bad row), then re-read it periodically."""
        await self.refresh()
        self._task = asyncio.create_task(self._watch(), name="key-table-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> None:
        """Read the table; rebuild the index if a row changed."""
        rows = [tuple(row) for row in await self._pool.fetch(SELECT_KEYS)]
        if rows == self._rows:
            return
        index = build_index(((row[0], _entry(row)) for row in rows), "api_keys row")
        self.index, self._rows, self._problem = index, rows, ""
        log.info("loaded %d API keys of %d principals from api_keys", index.keys, index.principals)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except _KEEP_PREVIOUS as exc:
                if str(exc) != self._problem:
                    self._problem = str(exc)
                    log.error("keeping the previous keys: api_keys cannot be used: %s", exc)


def _entry(row: tuple[Any, ...]) -> dict[str, Any]:
    _, principal, sha256, san, scopes, expires_at, rate_limits, max_streams = row
    entry: dict[str, Any] = {"principal": principal, "scopes": list(scopes or [])}
    for name, value in (("sha256", sha256), ("san", san), ("max_streams", max_streams)):
        if value is not None:
            entry[name] = value
    if expires_at is not None:
        entry["expires"] = expires_at.isoformat()
    if rate_limits is not None:
        entry["rate_limits"] = (
            json.loads(rate_limits) if isinstance(rate_limits, str) else rate_limits
        )
    return entry
