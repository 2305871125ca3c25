"""Pipelined Redis reads (``conductor_server.store.redis_reads``) against the real Redis.

Each test runs on both event loops the product meets: asyncio's (tests, embedded launcher) and
uvloop (the servers), whose transports differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import hiredis
import pytest
import uvloop
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from bench.harness.ports import free_port
from conductor_server.domain.counting import StepCount, StepTable
from conductor_server.ports import BatchState
from conductor_server.store.errors import StateBackendUnavailable
from conductor_server.store.redis_mirror import RedisMirror
from conductor_server.store.redis_reads import PipelinedReads
from tests.support.state_contract import STEPS

LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=list(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    return LOOPS[request.param]  # type: ignore[return-value]


def redis_at(url: str, **options: Any) -> Any:
    """A redis-py client (typed ``Any``: its stubs type every command as maybe-awaitable)."""
    return Redis.from_url(url, **options)


@contextlib.asynccontextmanager
async def reads_of(url: str, **options: Any) -> AsyncIterator[tuple[Any, PipelinedReads]]:
    async with redis_at(url, **options) as client:
        reads = PipelinedReads(client)
        try:
            yield client, reads
        finally:
            await reads.close()


async def connections_named(admin: Any, name: str) -> list[int]:
    """The ids of the connections named ``name`` (``CLIENT LIST``)."""
    listing = (await admin.execute_command("CLIENT", "LIST")).decode()
    fields = [dict(f.split("=", 1) for f in line.split()) for line in listing.splitlines()]
    return [int(f["id"]) for f in fields if f.get("name") == name]


Answer = Callable[[int, int, list[bytes]], bytes | None]  # connection, command, args -> reply


@contextlib.asynccontextmanager
async def fake_redis(answer: Answer) -> AsyncIterator[str]:
    """A server on loopback that answers each command with ``answer``'s RESP bytes (None:
    say nothing; ``b""``: close the connection). Yields its URL."""
    connections: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number, parser, commands = len(connections), hiredis.Reader(), 0
        connections.append(writer)
        while data := await reader.read(65536):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                reply = answer(number, commands, command)
                commands += 1
                if reply == b"":
                    writer.close()
                    return
                if reply is not None:
                    writer.write(reply)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


def test_reads_answer_as_redis_py_does(redis_url: str, run: Callable[..., Any]) -> None:
    async def scenario() -> None:
        async with reads_of(redis_url) as (admin, reads):
            await admin.hset("h", mapping={"a": "1", "b": b"\x00\xff", "": "empty"})
            assert await reads.hgetall("h") == await admin.hgetall("h")
            assert await reads.hgetall("missing") == {} == await admin.hgetall("missing")

    run(scenario())


def test_concurrent_reads_share_one_connection_and_each_gets_its_reply(
    redis_url: str, run: Callable[..., Any]
) -> None:
    async def scenario() -> None:
        name = f"reads-{uuid.uuid4().hex[:8]}"
        async with reads_of(redis_url, client_name=name) as (admin, reads):
            for n in range(200):
                await admin.hset(f"h{n}", "n", str(n))
            admin_connections = len(await connections_named(admin, name))
            answers = await asyncio.gather(*(reads.hgetall(f"h{n}") for n in range(200)))
            assert answers == [{b"n": str(n).encode()} for n in range(200)]
            assert len(await connections_named(admin, name)) == admin_connections + 1

    run(scenario())


def test_a_read_on_a_connection_the_server_closed_is_sent_again_on_a_new_one(
    run: Callable[..., Any],
) -> None:
    opened: list[int] = []

    def answer(connection: int, command: int, args: list[bytes]) -> bytes | None:
        if command == 0:
            opened.append(connection)
        if connection == 0 and command == 1:
            return b""  # closed under the read, as a restarted Redis or an idle timeout does
        return b"*2\r\n$1\r\nn\r\n$1\r\n" + str(connection).encode() + b"\r\n"

    async def scenario() -> None:
        async with fake_redis(answer) as url, reads_of(url) as (_, reads):
            assert await reads.hgetall("h") == {b"n": b"0"}
            assert await reads.hgetall("h") == {b"n": b"1"}
            assert opened == [0, 1]

    run(scenario())


def test_a_connection_killed_in_redis_is_replaced(redis_url: str, run: Callable[..., Any]) -> None:
    async def scenario() -> None:
        name = f"reads-{uuid.uuid4().hex[:8]}"
        async with reads_of(redis_url, client_name=name) as (admin, reads):
            await admin.hset("h", "a", "1")
            ids = set(await connections_named(admin, name))
            assert await reads.hgetall("h") == {b"a": b"1"}
            (ours,) = set(await connections_named(admin, name)) - ids
            await admin.execute_command("CLIENT", "KILL", "ID", str(ours))
            assert await reads.hgetall("h") == {b"a": b"1"}
            assert len(set(await connections_named(admin, name)) - ids - {ours}) == 1

    run(scenario())


def test_a_cancelled_read_leaves_the_others_their_own_replies(
    redis_url: str, run: Callable[..., Any]
) -> None:
    async def scenario() -> None:
        async with reads_of(redis_url) as (admin, reads):
            await admin.hset("a", "key", "a")
            await admin.hset("b", "key", "b")
            await reads.hgetall("a")  # connected
            for _ in range(20):
                cancelled = asyncio.create_task(reads.hgetall("a"))
                await asyncio.sleep(0)  # sent
                cancelled.cancel()
                assert await reads.hgetall("b") == {b"key": b"b"}
                assert await reads.hgetall("a") == {b"key": b"a"}

    run(scenario())


def test_closing_while_connecting_fails_the_waiting_reads_as_a_connection_error(
    run: Callable[..., Any],
) -> None:
    async def scenario() -> None:
        async with (
            fake_redis(lambda *_: None) as url,  # never answers AUTH
            reads_of(url.replace("//", "//:secret@"), socket_timeout=30) as (_, r),
        ):
            waiting = [asyncio.create_task(r.hgetall("h")) for _ in range(3)]
            await asyncio.sleep(0.1)
            began = time.monotonic()
            await r.close()
            for outcome in await asyncio.gather(*waiting, return_exceptions=True):
                assert isinstance(outcome, redis_errors.ConnectionError), outcome
            assert time.monotonic() - began < 1.0

    run(scenario())


@pytest.mark.parametrize(
    ("reply", "raised"),
    [
        (b"-ERR max number of clients reached\r\n", redis_errors.ConnectionError),
        (b"-LOADING Redis is loading the dataset in memory\r\n", redis_errors.BusyLoadingError),
        (b"-READONLY You can't write against a read only replica.\r\n", redis_errors.ReadOnlyError),
        (
            b"-WRONGTYPE Operation against a key holding the wrong kind\r\n",
            redis_errors.ResponseError,
        ),
    ],
)
def test_error_replies_raise_what_redis_py_raises(
    reply: bytes, raised: type[Exception], run: Callable[..., Any]
) -> None:
    async def scenario() -> None:
        async with fake_redis(lambda *_: reply) as url, reads_of(url) as (_, reads):
            with pytest.raises(raised) as caught:
                await reads.hgetall("h")
            assert type(caught.value) is raised

    run(scenario())


def test_the_mirror_falls_back_when_redis_refuses_a_connection(run: Callable[..., Any]) -> None:
    """A Redis at ``maxclients`` is unavailable, not a failed read: the caller reads PostgreSQL."""

    async def scenario() -> None:
        refusal = b"-ERR max number of clients reached\r\n"
        async with (
            fake_redis(lambda *_: refusal) as url,
            redis_at(url) as client,
            RedisMirror(client, StepTable(STEPS)) as mirror,
        ):
            with pytest.raises(StateBackendUnavailable):
                await mirror.read("b1")

    run(scenario())


def test_a_silent_server_times_out_every_read_in_flight_then_a_new_connection_is_opened(
    run: Callable[..., Any],
) -> None:
    async def scenario() -> None:
        connections: list[asyncio.StreamWriter] = []

        async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(writer)  # reads commands, never answers

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with reads_of(f"redis://127.0.0.1:{port}/0", socket_timeout=0.2) as (_, reads):
                began = time.monotonic()
                outcomes = await asyncio.gather(
                    *(reads.hgetall("h") for _ in range(3)), return_exceptions=True
                )
                waited = time.monotonic() - began
                assert all(isinstance(o, redis_errors.TimeoutError) for o in outcomes), outcomes
                assert 0.15 <= waited < 2.0
                with pytest.raises(redis_errors.TimeoutError):
                    await reads.hgetall("h")
                assert len(connections) == 2  # the timed-out connection was not reused
        finally:
            for writer in connections:
                writer.close()
            server.close()
            await server.wait_closed()

    run(scenario())


def test_an_error_reply_fails_only_its_read(redis_url: str, run: Callable[..., Any]) -> None:
    async def scenario() -> None:
        async with reads_of(redis_url) as (admin, reads):
            await admin.set("text", "not a hash")
            await admin.hset("h", "a", "1")
            wrong, right = await asyncio.gather(
                reads.hgetall("text"), reads.hgetall("h"), return_exceptions=True
            )
            assert isinstance(wrong, redis_errors.ResponseError)
            assert "WRONGTYPE" in str(wrong)
            assert right == {b"a": b"1"}

    run(scenario())


def test_an_unreachable_redis_is_a_connection_error(run: Callable[..., Any]) -> None:
    async def scenario() -> None:
        async with reads_of(f"redis://127.0.0.1:{free_port()}/0") as (_, reads):
            with pytest.raises(redis_errors.ConnectionError):
                await reads.hgetall("h")

    run(scenario())


def test_user_password_and_database_are_the_clients(
    redis_url: str, run: Callable[..., Any]
) -> None:
    user, password = f"reads{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    parts = urlsplit(redis_url)
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
    as_user = urlunsplit((parts.scheme, netloc, "/5", "", ""))
    wrong = urlunsplit((parts.scheme, f"{user}:nope@{parts.hostname}:{parts.port}", "/5", "", ""))
    anonymous = urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port}", "/5", "", ""))

    async def scenario() -> None:
        async with redis_at(redis_url) as admin:
            await admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all")
            try:
                async with redis_at(as_user) as in_db5:
                    await in_db5.hset("h", "db", "5")
                async with reads_of(as_user) as (_, reads):
                    assert await reads.hgetall("h") == {b"db": b"5"}
                async with reads_of(wrong) as (_, reads):
                    with pytest.raises(redis_errors.AuthenticationError):
                        await reads.hgetall("h")
            finally:
                await admin.execute_command("ACL", "DELUSER", user)
                async with redis_at(anonymous) as db5:
                    await db5.flushdb()

    run(scenario())


def test_the_mirror_answers_every_read_from_redis(redis_url: str, run: Callable[..., Any]) -> None:
    """A reply equal to the last is answered with the state already decoded; a merge by another
    replica shows at the next read."""
    table = StepTable(STEPS)

    def state(spellcheck: int) -> BatchState:
        counts = {"spellcheck": StepCount(spellcheck, 0, 4), "triage": StepCount(0, 0, 4)}
        return BatchState("b1", 4, frozenset(), table.derive(counts), 1)

    async def scenario() -> None:
        async with (
            redis_at(redis_url) as client,
            RedisMirror(client, table) as here,
            RedisMirror(client, table) as there,
        ):
            await there.merge([state(1)])
            first = await here.read("b1")
            assert first == state(1)
            assert await here.read("b1") is first
            await there.merge([state(3)])
            assert await here.read("b1") == state(3)
            await client.flushdb()
            assert await here.read("b1") is None

    run(scenario())
