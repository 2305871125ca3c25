"""The real backends a benchmark runs on: the environment's, else a private devstack."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg


@dataclass(frozen=True, slots=True)
class Backends:
    redis_url: str
    database_url: str  # a server's: benchmarks make their own database on it
    kafka_bootstrap: str


@contextmanager
def backends() -> Iterator[Backends]:
    """``REDIS_URL``, ``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` when all are set (e.g.
    ``. .devstack/env``), else a private devstack started now and stopped afterwards."""
    env = [os.environ.get(n) for n in ("REDIS_URL", "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")]
    if all(env):
        yield Backends(*env)  # type: ignore[arg-type]
        return
    from scripts.devstack import DEFAULT_STATE_DIR, Devstack

    stack = Devstack(DEFAULT_STATE_DIR / f"bench-{os.getpid()}")
    stack.up()
    try:
        yield Backends(stack.redis_url, stack.database_url, stack.kafka_bootstrap)
    finally:
        stack.down()
        shutil.rmtree(stack.state_dir, ignore_errors=True)


async def create_database(server_url: str) -> str:
    """A fresh database on the server of ``server_url``; its DSN."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


async def drop_database(server_url: str, database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def scratch_database(server_url: str) -> AsyncIterator[str]:
    """A fresh database on the server of ``server_url``, dropped afterwards."""
    database = await create_database(server_url)
    try:
        yield database
    finally:
        await drop_database(server_url, database)
