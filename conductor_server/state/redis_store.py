"""The Redis state store: hot state, one Lua call per batch for any number of its outcomes.

Key layout: ``keys.py``; the record script: ``script.py``. The script is loaded once with
SCRIPT LOAD, run with EVALSHA, and loaded again when Redis answers NOSCRIPT (after a restart or
SCRIPT FLUSH). Every key of a batch expires ``ttl`` after its last refresh (default 7 days).

Alone, this store is the state of record for Redis-only deployments (a lost batch is then an
``UnknownBatch``). Under ``ComposedStateStore`` it is a cache of PostgreSQL, rebuilt with
``restore``: the rebuild watches the batch marker, reads the snapshot *after* the watch and
installs it in one MULTI/EXEC, which fails if anyone touched the marker meanwhile. Redis must not
evict single keys (``maxmemory-policy noeviction``): losing a key but not its batch's marker would
go unnoticed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection

from conductor_server.domain.model import (
    BatchRegistration,
    Outcome,
    OutcomeRecord,
    StepDefinition,
)
from conductor_server.state.errors import (
    ConflictingOutcome,
    EssayNotExpected,
    RegistrationConflict,
    StateBackendUnavailable,
    UnknownBatch,
    UnknownStep,
)
from conductor_server.state.keys import FAILED_SUFFIX, TOTAL_SUFFIX, BatchKeys
from conductor_server.state.ledger import BatchLedger, BatchSnapshot, check_registration, replay
from conductor_server.state.protocol import BatchState, RecordResult
from conductor_server.state.script import RECORD_OUTCOMES, RECORD_OUTCOMES_SHA
from conductor_server.state.steps import StepCounts, StepTable, counted_state
from mesh.resource import AsyncResource

log = logging.getLogger(__name__)

DEFAULT_TTL = timedelta(days=7)

_TRANSIENT = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
    redis_errors.OutOfMemoryError,
    OSError,
)
_NOSCRIPT_ATTEMPTS = 3
_WATCH_ATTEMPTS = 50

SnapshotLoader = Callable[[], Awaitable[BatchSnapshot]]


@contextmanager
def _unavailable() -> Iterator[None]:
    """Translate Redis client failures into ``StateBackendUnavailable``."""
    try:
        yield
    except _TRANSIENT as exc:
        raise StateBackendUnavailable("redis", f"{type(exc).__name__}: {exc}") from exc


def _bulk(data: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _now(pipe: Pipeline, *args: str | int) -> Any:
    """Run one command on a pipeline in immediate mode (after WATCH)."""
    return await cast("Awaitable[Any]", pipe.execute_command(*args))


class RedisStateStore(AsyncResource):
    """Counts outcomes in Redis. Takes ownership of ``client`` (closed by ``close``)."""

    def __init__(
        self, client: Redis, steps: Mapping[str, StepDefinition], *, ttl: timedelta = DEFAULT_TTL
    ) -> None:
        self._client = client
        self._command: Callable[..., Awaitable[Any]] = client.execute_command
        self._get_connection: Callable[[], Awaitable[AbstractConnection]] = (
            client.connection_pool.get_connection
        )
        self._table = StepTable(steps)
        self._ttl = max(1, int(ttl.total_seconds()))
        self._graph = {
            name: json.dumps(
                {
                    "r": float(self._table[name].min_success_ratio),
                    "d": list(self._table[name].depends_on),
                    "n": list(self._table.dependants[name]),
                }
            )
            for name in self._table
        }
        self._script_loaded = False
        self._load_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_url(
        cls, url: str, steps: Mapping[str, StepDefinition], *, ttl: timedelta = DEFAULT_TTL
    ) -> RedisStateStore:
        return cls(Redis.from_url(url, decode_responses=True), steps, ttl=ttl)

    # -- registration -----------------------------------------------------------------------

    async def register_batch(self, registration: BatchRegistration) -> bool:
        check_registration(registration)
        keys = BatchKeys(registration.batch_id)
        with _unavailable():
            for _ in range(_WATCH_ATTEMPTS):
                try:
                    return await self._register_once(keys, registration)
                except redis_errors.WatchError:
                    continue
        raise StateBackendUnavailable("redis", "registration kept racing")

    async def _register_once(self, keys: BatchKeys, registration: BatchRegistration) -> bool:
        async with self._client.pipeline(transaction=True) as pipe:
            await pipe.watch(keys.meta)
            meta = await _now(pipe, "HMGET", keys.meta, "essays", "flags", "version")
            if meta[0] is None:
                pipe.multi()  # type: ignore[no-untyped-call]
                self._queue_install(pipe, BatchLedger(self._table, registration), 1)
                await pipe.execute()
                return True
            if set(json.loads(_text(meta[0]))) != set(registration.essay_ids):
                raise RegistrationConflict(registration.batch_id)
            flags = sorted(registration.flags)
            if json.loads(_text(meta[1])) != flags:
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.execute_command(
                    "HSET", keys.meta, "flags", json.dumps(flags), "version", int(meta[2]) + 1
                )
                await pipe.execute()
            return False

    # -- recording --------------------------------------------------------------------------

    async def record_outcomes(self, records: Sequence[OutcomeRecord]) -> list[RecordResult]:
        results: list[RecordResult | None] = [None] * len(records)
        known: list[int] = []
        for index, record in enumerate(records):
            if record.step in self._table:
                known.append(index)
            else:
                results[index] = RecordResult(
                    record, error=UnknownStep(record.batch_id, record.step)
                )
        replies = await self._evaluate([records[i] for i in known])
        for index, reply in zip(known, replies, strict=True):
            results[index] = self._result(records[index], reply)
        return [result for result in results if result is not None]

    async def replay(self, records: Sequence[OutcomeRecord]) -> list[str]:
        """Record like ``record_outcomes``, answering only each record's verdict.

        The verdict is the reply's first word (``recorded``, ``duplicate``, ``conflict``,
        ``not_expected``, ``unknown_step``, or ``nobatch`` when Redis does not have the batch):
        all that mirroring another store's accepted records needs, for a fraction of the cost.
        """
        known = [record for record in records if record.step in self._table]
        verdicts = iter(reply.split(" ", 1)[0] for reply in await self._evaluate(known))
        return [next(verdicts) if r.step in self._table else "unknown_step" for r in records]

    async def _evaluate(self, records: Sequence[OutcomeRecord]) -> list[str]:
        """Each record's reply line: one script call per batch, every call in one round trip.

        A call that hits NOSCRIPT (Redis restarted or flushed its scripts) is sent again once
        the script is loaded; nothing ran for it, so nothing is counted twice.
        """
        if not records:
            return []
        groups: dict[str, list[int]] = {}  # batch -> indices of its records, in order
        for index, record in enumerate(records):
            groups.setdefault(record.batch_id, []).append(index)
        replies: list[str] = [""] * len(records)
        pending = list(groups.values())
        with _unavailable():
            for _ in range(_NOSCRIPT_ATTEMPTS):
                await self._load_script()
                answers = await self._pipeline([self._pack(records, group) for group in pending])
                missing: list[list[int]] = []
                for group, answer in zip(pending, answers, strict=True):
                    if isinstance(answer, redis_errors.NoScriptError):
                        missing.append(group)
                    elif isinstance(answer, Exception):
                        raise answer
                    else:
                        for index, line in zip(group, _text(answer).split("\n"), strict=True):
                            replies[index] = line
                if not missing:
                    return replies
                log.warning("redis lost the record script; loading it again")
                self._script_loaded = False
                pending = missing
        raise StateBackendUnavailable("redis", "the record script keeps disappearing")

    async def _load_script(self) -> None:
        if self._script_loaded:
            return
        async with self._load_lock:
            if not self._script_loaded:
                sha = _text(await self._command("SCRIPT", "LOAD", RECORD_OUTCOMES))
                if sha != RECORD_OUTCOMES_SHA:
                    raise RuntimeError(
                        f"redis computed script sha {sha}, not {RECORD_OUTCOMES_SHA}"
                    )
                self._script_loaded = True

    async def _pipeline(self, commands: list[bytes]) -> list[Any]:
        """Send already packed commands in one write; read one reply (or error) per command."""
        pool = self._client.connection_pool
        connection = await self._get_connection()
        try:
            await connection.send_packed_command(b"".join(commands), check_health=False)
            answers: list[Any] = []
            for _ in commands:
                try:
                    answers.append(await connection.read_response())
                except redis_errors.ResponseError as exc:
                    answers.append(exc)
            return answers
        except BaseException:
            await connection.disconnect()  # replies may be left unread: never reuse it
            raise
        finally:
            await pool.release(connection)

    def _pack(self, records: Sequence[OutcomeRecord], group: Sequence[int]) -> bytes:
        """The RESP-encoded ``EVALSHA`` recording ``records[i] for i in group`` (one batch).

        Packed by hand: redis-py spends most of a pipeline's time encoding arguments, and the
        step and outcome of a record are one of a few byte strings, built once per call.
        """
        keys = BatchKeys(records[group[0]].batch_id)
        head = [
            "EVALSHA",
            RECORD_OUTCOMES_SHA,
            "4",
            keys.meta,
            keys.graph,
            keys.state,
            keys.essays,
            str(self._ttl),
            keys.outcomes_prefix,
            keys.expected_prefix,
        ]
        parts = [b"*%d\r\n" % (len(head) + 3 * len(group))]
        parts += [_bulk(arg.encode()) for arg in head]
        pairs: dict[tuple[str, Outcome], bytes] = {}  # (step, outcome) -> their two bulk strings
        for index in group:
            record = records[index]
            pair = pairs.get((record.step, record.outcome))
            if pair is None:
                pair = _bulk(record.step.encode()) + _bulk(record.outcome.value.encode())
                pairs[(record.step, record.outcome)] = pair
            parts.append(pair)
            parts.append(_bulk(record.essay_id.encode()))
        return b"".join(parts)

    def _result(self, record: OutcomeRecord, reply: str) -> RecordResult:
        words = reply.split()
        verdict = words[0]
        if verdict == "nobatch":
            return RecordResult(record, error=UnknownBatch(record.batch_id))
        if verdict == "unknown_step":
            return RecordResult(record, error=UnknownStep(record.batch_id, record.step))
        if verdict == "not_expected":
            error = EssayNotExpected(record.batch_id, record.step, record.essay_id)
            return RecordResult(record, error=error)
        if verdict == "conflict":
            conflict = ConflictingOutcome(
                record.batch_id, record.step, record.essay_id, Outcome(words[1]), record.outcome
            )
            return RecordResult(record, error=conflict)
        definition = self._table[record.step]
        state = counted_state(definition, int(words[1]), int(words[2]), int(words[3]))
        if verdict == "duplicate":
            return RecordResult(record, state=state)
        return RecordResult(
            record,
            newly_recorded=True,
            completed_step=words[4] == "1",
            state=state,
            cascaded=tuple(counted_state(self._table[name], 0, 0, 0) for name in words[5:]),
        )

    # -- reading ----------------------------------------------------------------------------

    async def batch_state(self, batch_id: str) -> BatchState:
        keys = BatchKeys(batch_id)
        with _unavailable():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.execute_command("HMGET", keys.meta, "essays", "flags")
                pipe.execute_command("HGETALL", keys.state)
                meta, raw = await pipe.execute()
        if meta[0] is None:
            raise UnknownBatch(batch_id)
        registration = BatchRegistration(
            batch_id,
            tuple(json.loads(_text(meta[0]))),
            frozenset(json.loads(_text(meta[1]))),
        )
        fields = {_text(k): int(v) for k, v in _pairs(raw)}
        counts = {
            name: StepCounts(
                fields.get(name, 0),
                fields.get(name + FAILED_SUFFIX, 0),
                fields.get(name + TOTAL_SUFFIX),
            )
            for name in self._table
        }
        return BatchState(registration, self._table.derive(len(registration.essay_ids), counts))

    # -- rebuilding (ComposedStateStore) ----------------------------------------------------

    async def restore(
        self, batch_id: str, load: SnapshotLoader, *, min_version: int | None = None
    ) -> bool:
        """Install the batch from ``load()`` unless Redis has it; True if it installed it.

        With ``min_version``, a present batch whose registration is older gets the loaded
        registration (flags). ``load`` runs after the marker is watched, so an install can
        never overwrite newer state: whoever touched the marker meanwhile wins, and this
        attempt starts over.
        """
        keys = BatchKeys(batch_id)
        with _unavailable():
            for _ in range(_WATCH_ATTEMPTS):
                try:
                    return await self._restore_once(keys, load, min_version)
                except redis_errors.WatchError:
                    continue
        raise StateBackendUnavailable("redis", f"rebuilding batch {batch_id} kept racing")

    async def _restore_once(
        self, keys: BatchKeys, load: SnapshotLoader, min_version: int | None
    ) -> bool:
        async with self._client.pipeline(transaction=True) as pipe:
            await pipe.watch(keys.meta)
            version = await _now(pipe, "HGET", keys.meta, "version")
            if version is not None and (min_version is None or int(version) >= min_version):
                return False
            snapshot = await load()
            pipe.multi()  # type: ignore[no-untyped-call]
            if version is None:
                self._queue_install(pipe, replay(self._table, snapshot), snapshot.version)
            elif snapshot.version > int(version):
                pipe.execute_command(
                    "HSET",
                    keys.meta,
                    "flags",
                    json.dumps(sorted(snapshot.registration.flags)),
                    "version",
                    snapshot.version,
                )
            await pipe.execute()
            return version is None

    async def invalidate(self, batch_id: str) -> None:
        """Drop every key of the batch at once (marker included): the next access rebuilds."""
        with _unavailable():
            await self._command("DEL", *BatchKeys(batch_id).every(self._table))

    def _queue_install(self, pipe: Pipeline, ledger: BatchLedger, version: int) -> None:
        """Queue the commands that write ``ledger`` as the batch's complete image."""
        keys = BatchKeys(ledger.batch_id)
        ttl = self._ttl
        every = keys.every(self._table)
        pipe.execute_command("DEL", *every)
        registration = ledger.registration
        pipe.execute_command("SADD", keys.essays, *registration.essay_ids)
        pipe.execute_command("HSET", keys.graph, *_flatten(self._graph))
        state: dict[str, int] = {}
        for name in self._table:
            counts = ledger.counts(name)
            if counts.total is not None:
                state[name] = counts.succeeded
                state[name + FAILED_SUFFIX] = counts.failed
                state[name + TOTAL_SUFFIX] = counts.total
            outcomes = ledger.outcomes[name]
            if outcomes:
                flat = _flatten({essay: outcome.value for essay, outcome in outcomes.items()})
                pipe.execute_command("HSET", keys.outcomes(name), *flat)
            expected = ledger.expected.get(name)
            if expected and self._table[name].depends_on:
                pipe.execute_command("SADD", keys.expected(name), *expected)
        if state:
            pipe.execute_command("HSET", keys.state, *_flatten(state))
        pipe.execute_command(
            "HSET",
            keys.meta,
            "essays",
            json.dumps(list(registration.essay_ids)),
            "flags",
            json.dumps(sorted(registration.flags)),
            "version",
            version,
        )
        for key in every:
            pipe.execute_command("EXPIRE", key, ttl)

    # -- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.aclose()


def _flatten(mapping: Mapping[str, str | int]) -> list[str | int]:
    return [item for pair in mapping.items() for item in pair]


def _pairs(raw: Any) -> list[tuple[Any, Any]]:
    """HGETALL's reply as pairs (a dict with RESP2 parsing in redis-py, a flat list otherwise)."""
    if isinstance(raw, dict):
        return list(raw.items())
    return list(zip(raw[::2], raw[1::2], strict=True))
