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

import pytest
import uvloop
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from conductor_server.domain.counting import StepCount, StepTable
from conductor_server.ports import BatchState
from conductor_server.store.redis_mirror import RedisMirror
from conductor_server.store.redis_reads import PipelinedReads
from tests.support.net import free_port
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


async def connected_clients(admin: Any) -> int:
    return int((await admin.info("clients"))["connected_clients"])


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
        async with reads_of(redis_url) as (admin, reads):
            for n in range(200):
                await admin.hset(f"h{n}", "n", str(n))
            before = await connected_clients(admin)
            answers = await asyncio.gather(*(reads.hgetall(f"h{n}") for n in range(200)))
            assert answers == [{b"n": str(n).encode()} for n in range(200)]
            assert await connected_clients(admin) == before + 1

    run(scenario())


def test_reads_on_a_killed_connection_are_sent_again_on_a_new_one(
    redis_url: str, run: Callable[..., Any]
) -> None:
    async def scenario() -> None:
        async with reads_of(redis_url) as (admin, reads), redis_at(redis_url) as killer:
            await admin.hset("h", "a", "1")
            assert await reads.hgetall("h") == {b"a": b"1"}
            in_flight = [asyncio.create_task(reads.hgetall("h")) for _ in range(50)]
            await killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            assert await asyncio.gather(*in_flight) == [{b"a": b"1"}] * 50
            await killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            await asyncio.sleep(0.05)  # the idle connection is gone, as after a restart
            assert await reads.hgetall("h") == {b"a": b"1"}

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
                assert all(isinstance(o, TimeoutError) for o in outcomes), outcomes
                assert 0.15 <= waited < 2.0
                with pytest.raises(TimeoutError):
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
