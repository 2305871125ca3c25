"""Pipelined Redis reads: every read of the mirror shares one connection, in flight together.

``RedisMirror.read`` is on the path of every ``ResolvePipeline``, ``ValidatePrerequisites`` and
``GetBatchPipelineState``. redis-py's asyncio client gives each command a pooled connection of
its own, with a pool checkout, a timeout scope and a socket read per reply. Here the reads
queued in one turn of the event loop leave in one write on one connection, their replies come
back in order in as few socket reads as the kernel delivers, and hiredis (redis-py's own
compiled parser) parses them: a fifth of the CPU a read (measured in ``docs/architecture.md``).
Nothing is cached: every read is answered by Redis, after every write Redis applied before it.

The connection is opened as the given redis-py client's pool would open it (address or unix
socket, TLS context, credentials, client name, database; not its keepalive options), on the
first read and again on the first read after it was lost. A read that fails or times out
fails every read in flight on that connection (their replies could no longer be matched),
which then closes; a read that found its connection lost is sent once more on a new one. An
error reply raises what redis-py raises for it (its own table: ``ConnectionError`` for a
Redis at ``maxclients``, ``BusyLoadingError``, ``ResponseError``, ...), a timeout
``redis.exceptions.TimeoutError``.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis import exceptions as redis_errors
from redis._parsers import BaseParser  # redis-py's table of error replies, used as redis-py does
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

# redis-py's exception for an error reply (ConnectionError for "max number of clients", ...)
_ERROR_OF_REPLY = cast(Callable[[str], Exception], BaseParser.parse_error)
CLOCK_SLACK = 0.001  # uvloop's clock ticks in milliseconds: a timer may fire just before due


class _Wire(asyncio.Protocol):
    """One connection: commands written in batches, replies matched to waiters in order.

    ``timeout`` (seconds, None: none) bounds how long a reply may take: one timer for the
    connection, not one per command, watches the oldest command in flight.
    """

    def __init__(self, timeout: float | None) -> None:
        self._parser = hiredis.Reader(replyError=_ErrorReply)
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._queued: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._timeout = timeout
        self._watch: asyncio.TimerHandle | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed(data)
            while (reply := self._parser.gets()) is not False:
                waiter, _ = self._waiting.popleft()
                if waiter.done():
                    continue
                if isinstance(reply, _ErrorReply):
                    waiter.set_exception(_ERROR_OF_REPLY(str(reply)))
                else:
                    waiter.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # not Redis speaking, or out of step
            self.abort(redis_errors.ConnectionError(f"bad reply from Redis: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(redis_errors.ConnectionError(f"connection to Redis lost: {exc!r}"))

    def send(self, *args: str | bytes | int) -> asyncio.Future[Any]:
        """Queue a command; its reply resolves the returned future."""
        if self.lost or self._transport is None:
            raise redis_errors.ConnectionError("connection to Redis lost")
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiting.append((waiter, loop.time()))
        self._queued.append(hiredis.pack_command(args))  # type: ignore[arg-type]  # stub: 1-tuple
        if len(self._queued) == 1:
            loop.call_soon(self._write)
        if self._watch is None and self._timeout is not None:
            self._watch = loop.call_later(self._timeout, self._check)
        return waiter

    def _check(self) -> None:
        """Abort if the oldest command in flight has waited ``timeout``; else watch it."""
        self._watch = None
        if not self._waiting or self.lost or self._timeout is None:
            return
        loop = asyncio.get_running_loop()
        due = self._waiting[0][1] + self._timeout
        if loop.time() + CLOCK_SLACK >= due:
            self.abort(redis_errors.TimeoutError(f"Redis did not answer within {self._timeout} s"))
        else:
            self._watch = loop.call_at(due, self._check)

    def _write(self) -> None:
        if self._queued and self._transport is not None and not self.lost:
            self._transport.write(b"".join(self._queued))
        self._queued.clear()

    def abort(self, error: Exception) -> None:
        """Close at once, failing every command in flight with ``error``."""
        self._fail(error)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, error: Exception) -> None:
        self.lost = True
        self._queued.clear()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        while self._waiting:
            waiter, _ = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)


class _ErrorReply(Exception):
    """An error reply as hiredis hands it over; raised as redis-py's class for it."""


class PipelinedReads:
    """Reads over one pipelined connection, opened like ``client``'s pool opens its own."""

    def __init__(self, client: Redis) -> None:
        pool = client.connection_pool
        self._template = pool.connection_class(**pool.connection_kwargs)
        self._wire: _Wire | None = None
        self._opening: asyncio.Task[_Wire] | None = None
        self._closed = False

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        """``HGETALL key`` (an empty dict when the key does not exist)."""
        flat = await self._call("HGETALL", key)
        return dict(zip(flat[::2], flat[1::2], strict=True))

    async def close(self) -> None:
        """Close the connection (and one being opened); reads then fail. Idempotent."""
        self._closed = True
        opening, self._opening = self._opening, None
        if opening is not None:
            opening.cancel()
            await asyncio.wait({opening})  # ``_opened`` closes what it may have opened
        if self._wire is not None:
            self._wire.abort(redis_errors.ConnectionError("closed"))
            self._wire = None

    async def _call(self, *args: str | bytes | int) -> Any:
        """Send a read; one that meets a connection Redis had already closed (a restart, an
        idle timeout) is sent again once on a new connection, as redis-py retries."""
        wire = self._wire
        if wire is None or wire.lost:
            return await (await self._open()).send(*args)
        try:
            return await wire.send(*args)
        except redis_errors.ConnectionError:
            if not wire.lost:  # an answer (LOADING, a refusal), not a lost connection
                raise
        return await (await self._open()).send(*args)

    async def _open(self) -> _Wire:
        """A new connection, opened once however many reads wait for it. A read cancelled
        while it waits leaves the opening to the others (and to ``_opened``)."""
        if self._closed:
            raise redis_errors.ConnectionError("closed")
        if self._opening is None:
            self._opening = asyncio.create_task(self._connect())
            self._opening.add_done_callback(self._opened)
        opening = self._opening
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if opening.cancelled() and task is not None and not task.cancelling():
                raise redis_errors.ConnectionError("closed while connecting") from None
            raise

    def _opened(self, opening: asyncio.Task[_Wire]) -> None:
        """Keep the connection ``opening`` made (or close it, if closed meanwhile)."""
        if self._opening is opening:
            self._opening = None
        if opening.cancelled() or opening.exception() is not None:
            return
        wire = opening.result()
        if self._closed:
            wire.abort(redis_errors.ConnectionError("closed"))
        else:
            self._wire = wire

    async def _connect(self) -> _Wire:
        """Connect, authenticate, name the connection and select the database, as the
        client's own connections do."""
        t = self._template
        timeout = t.socket_timeout
        loop = asyncio.get_running_loop()
        wire: _Wire
        try:
            async with asyncio.timeout(t.socket_connect_timeout):
                if isinstance(t, UnixDomainSocketConnection):
                    _, wire = await loop.create_unix_connection(lambda: _Wire(timeout), t.path)
                elif isinstance(t, Connection):
                    ssl = t.ssl_context.get() if isinstance(t, SSLConnection) else None
                    _, wire = await loop.create_connection(
                        lambda: _Wire(timeout), t.host, t.port, ssl=ssl
                    )
                else:
                    raise TypeError(f"unsupported Redis connection class {type(t).__name__}")
        except TimeoutError as exc:
            raise redis_errors.TimeoutError(f"connecting to Redis: {exc}") from exc
        except OSError as exc:
            raise redis_errors.ConnectionError(f"cannot reach Redis: {exc}") from exc
        try:
            credentials = await _credentials(t)
            if credentials:
                await wire.send("AUTH", *credentials)
            if t.client_name:
                await wire.send("CLIENT", "SETNAME", t.client_name)
            if t.db:
                await wire.send("SELECT", t.db)
        except BaseException:
            wire.abort(redis_errors.ConnectionError("closed while opening"))
            raise
        return wire


async def _credentials(connection: Any) -> tuple[str, ...]:
    """The arguments of AUTH for a redis-py connection (none: no AUTH)."""
    provider = connection.credential_provider
    if provider is not None:
        return tuple(await provider.get_credentials_async())
    if connection.password:
        username = connection.username
        return (username, connection.password) if username else (connection.password,)
    return ()
