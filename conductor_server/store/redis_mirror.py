"""Redis as a mirror of PostgreSQL's counts: the conductor's reads, one command each.

Redis holds, per batch, one hash with what ``BatchState`` needs (``keys.py``): the registration
(essay count, flags, version) and every step's succeeded, failed and total. It never decides
anything: after each PostgreSQL write the composed store *merges* the batch's resulting counts
into it with one script call. Every value only ever grows in PostgreSQL (counts, a total once
known, the registration's version), so keeping the larger of the stored and the incoming value
makes a merge idempotent and commutative: merges that arrive late or twice, from any replica,
leave the latest committed counts. A batch missing from Redis (flushed, expired, never mirrored)
is merged from a PostgreSQL read. A batch's hash expires ``ttl`` after its last merge.

Merges go through the caller's redis-py client; reads, on the path of every resolution, go
through the mirror's own pipelined connection (``redis_reads``), opened like the client's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from types import MappingProxyType
from typing import Any, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from conductor_server.domain.counting import StepCount, StepTable
from conductor_server.domain.model import StepStatus
from conductor_server.ports import BatchState
from conductor_server.store import keys
from conductor_server.store.errors import StateBackendUnavailable
from conductor_server.store.redis_reads import PipelinedReads
from mesh.postgres.pool import redact
from mesh.resource import AsyncResource
from mesh.runtime import StartupError

log = logging.getLogger(__name__)

DEFAULT_TTL = timedelta(days=7)
DECODED = 1024  # batches whose latest decoded reply ``read`` keeps
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

# KEYS: the batch's hash. ARGV: ttl, version, essay count, flags (JSON), then the counts as
# (field, value) pairs. The registration is replaced by a newer version; a count by a larger one.
MERGE = f"""
local key, ttl, version = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local stored = redis.call('HGETALL', key)
local current = {{}}
for i = 1, #stored, 2 do current[stored[i]] = stored[i + 1] end
if version > tonumber(current['{keys.VERSION}'] or '0') then
  redis.call('HSET', key, '{keys.VERSION}', ARGV[2], '{keys.ESSAYS}', ARGV[3],
             '{keys.FLAGS}', ARGV[4])
end
for i = 5, #ARGV, 2 do
  if tonumber(ARGV[i + 1]) > tonumber(current[ARGV[i]] or '-1') then
    redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  end
end
redis.call('EXPIRE', key, ttl)
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
async def redis_client(
    url: str, within: float = CONNECT_TIMEOUT, *, password: str = "", tls_ca_file: str = ""
) -> AsyncIterator[Redis]:
    """A Redis client (connection pool) that answered PING; ``StartupError`` otherwise.

    ``password`` is Redis's AUTH password (when not in the URL), ``tls_ca_file`` the CA of its
    certificate (with a ``rediss://`` URL, which turns TLS on).
    """
    options: dict[str, Any] = {}
    if password:
        options["password"] = password
    if tls_ca_file:
        if not url.startswith("rediss://"):
            raise StartupError("REDIS_TLS_CA_FILE needs a rediss:// REDIS_URL")
        options["ssl_ca_certs"] = tls_ca_file
    client: Redis = Redis.from_url(
        url,
        socket_connect_timeout=within,
        socket_timeout=within,
        health_check_interval=30,
        **options,
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
    """Merges batch states into Redis over ``client`` (the caller's) and reads them back over
    a pipelined connection of its own (closed by ``close``)."""

    def __init__(self, client: Redis, table: StepTable, *, ttl: timedelta = DEFAULT_TTL) -> None:
        self._client = client
        self._table = table
        self._ttl = max(1, int(ttl.total_seconds()))
        self._merge = client.register_script(MERGE)
        self._reads = PipelinedReads(client)
        self._decoded: OrderedDict[str, tuple[dict[bytes, bytes], BatchState]] = OrderedDict()

    async def close(self) -> None:
        """Close the reads' connection (the client belongs to the caller)."""
        await self._reads.close()

    async def probe(self) -> object:
        """A health probe: PING."""
        return await cast(Awaitable[bool], self._client.ping())

    async def merge(self, states: Sequence[BatchState]) -> None:
        """Merge each batch's state into Redis: one script call (EVALSHA) per batch."""
        with _unavailable():
            await asyncio.gather(
                *(
                    self._merge(keys=[keys.batch_key(s.batch_id)], args=self._arguments(s))
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
            epoch = state.epochs.get(step.step, 1)
            args += [
                step.step,
                step.succeeded,
                step.step + keys.FAILED,
                keys.in_epoch(epoch, step.failed),
                step.step + keys.TIMED_OUT,
                keys.in_epoch(epoch, step.timed_out),
            ]
            if step.status not in _UNKNOWN_TOTAL:
                args += [step.step + keys.TOTAL, step.total]
        return args

    async def read(self, batch_id: str) -> BatchState | None:
        """The mirrored state of the batch (one HGETALL); None when Redis does not have it.

        Every read asks Redis. Decoding a reply costs more than the read itself, so the state
        decoded from the latest reply of each of the last ``DECODED`` batches read is kept, and
        a reply equal to it is answered with it (a state is a function of the reply alone).
        """
        with _unavailable():
            raw = await self._reads.hgetall(keys.batch_key(batch_id))
        known = self._decoded.get(batch_id)
        if known is not None and known[0] == raw:
            self._decoded.move_to_end(batch_id)
            return known[1]
        state = self._decode(batch_id, raw)
        self._decoded.pop(batch_id, None)
        if state is not None:
            if len(self._decoded) >= DECODED:
                self._decoded.popitem(last=False)  # the least recently read
            self._decoded[batch_id] = (raw, state)
        return state

    def _decode(self, batch_id: str, raw: Mapping[bytes, bytes]) -> BatchState | None:
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        if keys.VERSION not in fields:
            return None
        counts = {}
        for name in self._table:
            total = fields.get(name + keys.TOTAL)
            epoch, failed = keys.epoch_and_count(int(fields.get(name + keys.FAILED, 0)))
            _, timed_out = keys.epoch_and_count(int(fields.get(name + keys.TIMED_OUT, 0)))
            counts[name] = StepCount(
                int(fields.get(name, 0)),
                failed,
                None if total is None else int(total),
                timed_out=timed_out,
                epoch=max(epoch, 1),
            )
        return BatchState(
            batch_id,
            int(fields[keys.ESSAYS]),
            frozenset(json.loads(fields[keys.FLAGS])),
            self._table.derive(counts),
            int(fields[keys.VERSION]),
            MappingProxyType({name: count.epoch for name, count in counts.items()}),
        )
