"""Redis as a mirror of PostgreSQL's counts: the conductor's reads, one round trip each.

Redis holds, per batch, what ``BatchState`` needs (``keys.py``): the registration (essay count,
flags, version) and every step's succeeded, failed and total. It never decides anything: after
each PostgreSQL write the composed store *merges* the batch's resulting counts into it with one
script call. Every value only ever grows in PostgreSQL (counts, a total once known, the
registration's version), so keeping the larger of the stored and the incoming value makes a
merge idempotent and commutative: merges that arrive late or twice, from any replica, leave the
latest committed counts. A batch missing from Redis (flushed, expired, never mirrored) is
merged from a PostgreSQL read. Every key of a batch expires ``ttl`` after its last merge.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from typing import Any, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from conductor_server.domain.counting import StepCount, StepTable
from conductor_server.domain.model import StepStatus
from conductor_server.ports import BatchState
from conductor_server.store.errors import StateBackendUnavailable
from conductor_server.store.keys import FAILED_SUFFIX, TOTAL_SUFFIX, BatchKeys
from mesh.postgres.pool import redact
from mesh.resource import AsyncResource
from mesh.runtime import StartupError

log = logging.getLogger(__name__)

DEFAULT_TTL = timedelta(days=7)
CONNECT_TIMEOUT = 10.0

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
    redis_errors.OutOfMemoryError,
    OSError,
)

# KEYS: meta, state. ARGV: ttl, version, essay count, flags (JSON), then (field, value) pairs.
MERGE = """
local meta, state, ttl = KEYS[1], KEYS[2], tonumber(ARGV[1])
local version = tonumber(ARGV[2])
if version > tonumber(redis.call('HGET', meta, 'version') or '0') then
  redis.call('HSET', meta, 'version', ARGV[2], 'essays', ARGV[3], 'flags', ARGV[4])
end
local stored = redis.call('HGETALL', state)
local current = {}
for i = 1, #stored, 2 do current[stored[i]] = tonumber(stored[i + 1]) end
for i = 5, #ARGV, 2 do
  local value = tonumber(ARGV[i + 1])
  if value > (current[ARGV[i]] or -1) then redis.call('HSET', state, ARGV[i], value) end
end
redis.call('EXPIRE', meta, ttl)
redis.call('EXPIRE', state, ttl)
return 1
"""

_UNKNOWN_TOTAL = (StepStatus.WAITING, StepStatus.BLOCKED)


@contextmanager
def _unavailable() -> Iterator[None]:
    """Translate Redis client failures into ``StateBackendUnavailable``."""
    try:
        yield
    except TRANSIENT_ERRORS as exc:
        raise StateBackendUnavailable("redis", f"{type(exc).__name__}: {exc}") from exc


@asynccontextmanager
async def redis_client(url: str, within: float = CONNECT_TIMEOUT) -> AsyncIterator[Redis]:
    """A Redis client (connection pool) that answered PING; ``StartupError`` otherwise."""
    client: Redis = Redis.from_url(
        url, socket_connect_timeout=within, socket_timeout=within, health_check_interval=30
    )
    try:
        try:
            await cast(Awaitable[bool], client.ping())
        except TRANSIENT_ERRORS as exc:
            raise StartupError(f"Redis unreachable at {redact(url)}: {exc!r}") from exc
        log.info("connected to Redis at %s", redact(url))
        yield client
    finally:
        await client.aclose()


class RedisMirror(AsyncResource):
    """Merges batch states into Redis and reads them back, over ``client`` (the caller's)."""

    def __init__(self, client: Redis, table: StepTable, *, ttl: timedelta = DEFAULT_TTL) -> None:
        self._client = client
        self._table = table
        self._ttl = max(1, int(ttl.total_seconds()))
        self._merge = client.register_script(MERGE)

    async def close(self) -> None:
        """The client belongs to the caller: nothing to release."""

    async def probe(self) -> object:
        """A health probe: PING."""
        return await cast(Awaitable[bool], self._client.ping())

    async def merge(self, states: Sequence[BatchState]) -> None:
        """Merge each batch's state into Redis: one script call (EVALSHA) per batch."""
        with _unavailable():
            await asyncio.gather(
                *(
                    self._merge(
                        keys=[BatchKeys(s.batch_id).meta, BatchKeys(s.batch_id).state],
                        args=self._arguments(s),
                    )
                    for s in states
                )
            )

    def _arguments(self, state: BatchState) -> list[str | int]:
        args: list[str | int] = [
            self._ttl,
            state.version,
            state.essay_count,
            json.dumps(sorted(state.flags)),
        ]
        for step in state.steps:
            args += [step.step, step.succeeded, step.step + FAILED_SUFFIX, step.failed]
            if step.status not in _UNKNOWN_TOTAL:
                args += [step.step + TOTAL_SUFFIX, step.total]
        return args

    async def read(self, batch_id: str) -> BatchState | None:
        """The mirrored state of the batch; None when Redis does not have it."""
        keys = BatchKeys(batch_id)
        with _unavailable():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hgetall(keys.meta)
                pipe.hgetall(keys.state)
                meta, raw = await pipe.execute()
        if not meta:
            return None
        fields = {_text(k): int(v) for k, v in raw.items()}
        counts = {
            name: StepCount(
                fields.get(name, 0),
                fields.get(name + FAILED_SUFFIX, 0),
                fields.get(name + TOTAL_SUFFIX),
            )
            for name in self._table
        }
        return BatchState(
            batch_id,
            int(meta[b"essays"]),
            frozenset(json.loads(meta[b"flags"])),
            self._table.derive(counts),
            int(meta[b"version"]),
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
