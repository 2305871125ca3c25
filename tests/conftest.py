"""Real Redis, PostgreSQL and Kafka for ``tests/integration`` and ``tests/e2e``.

Every fixture here is lazy: unit and service tests never ask for one, so they never start a
server. Tests under ``tests/integration``, ``tests/e2e`` and ``tests/security`` are marked with
their tier. The session fixture ``backends`` attaches to the stack ``scripts/devstack up`` started
(``.devstack/state.json``) when it is up as recorded; otherwise it starts a private one through
:class:`scripts.devstack.Devstack` (which uses the servers named by ``REDIS_URL`` /
``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` instead of starting those) and stops it when the
session ends. A missing backend is
started or the session fails: nothing is skipped.

Per-test isolation: ``redis_url`` (database flushed before the test), ``database_url`` (a fresh
database, dropped afterwards), ``kafka_namespace`` (a unique topic and group prefix).
A backend a test stops or kills through ``backends`` runs again before the next test.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis

from scripts.devstack import Devstack, default_state_dir

TESTS = Path(__file__).resolve().parent
TIERS = ("integration", "e2e", "security")  # folders whose tests get the marker of that name


class Backends:
    """The session's servers, and fault injection on the ones devstack manages.

    ``stop``/``kill``/``start`` act on one of ``redis``, ``postgres``, ``kafka`` and keep its port
    and data (Redis keeps no data). They raise for a server named by an environment variable.
    """

    def __init__(self, stack: Devstack) -> None:
        self._stack = stack
        self._down: set[str] = set()
        self.redis_url = stack.redis_url
        self.database_url = stack.database_url
        self.kafka_bootstrap = stack.kafka_bootstrap

    def stop(self, name: str) -> None:
        """Stop ``name`` gracefully; it is started again after the test at the latest."""
        self._down.add(name)
        self._stack.stop(name)

    def kill(self, name: str) -> None:
        """Kill ``name``'s server with SIGKILL; it is started again after the test at the latest."""
        self._down.add(name)
        self._stack.kill(name)

    def start(self, name: str) -> None:
        """Start ``name`` again on its port and data; return once it is ready."""
        self._stack.start(name)
        self._down.discard(name)

    def restore(self) -> None:
        """Start whatever a test stopped or killed and did not start again."""
        for name in sorted(self._down):
            self.start(name)


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    """Real Redis, PostgreSQL and Kafka for the whole session (see the module docstring)."""
    shared = Devstack()
    if shared.is_up():
        yield Backends(shared)
        return
    # A private state folder: a concurrent `scripts/devstack down` of the shared stack, or another
    # session, cannot take this session's servers away.
    private = Devstack(default_state_dir() / f"pytest-{os.getpid()}")
    try:
        private.up()
        yield Backends(private)
    finally:
        private.down()
        shutil.rmtree(private.state_dir, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Restart backends the test took down, before its fixtures' finalizers need them."""
    stack = getattr(item, "funcargs", {}).get("backends")
    if isinstance(stack, Backends):
        stack.restore()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests under ``tests/integration`` and ``tests/e2e`` with their tier."""
    for item in items:
        path = item.path.resolve()
        tier = path.relative_to(TESTS).parts[0] if path.is_relative_to(TESTS) else ""
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
def redis_url(backends: Backends) -> str:
    """The session's Redis URL; its database is flushed before the test."""
    backends.restore()
    with redis.Redis.from_url(backends.redis_url) as client:
        client.flushdb()
    return backends.redis_url


@pytest.fixture
async def database_url(backends: Backends) -> AsyncIterator[str]:
    """DSN of a fresh database ``t_<hex>`` on the session's server, dropped after the test."""
    backends.restore()
    name = f"t_{uuid.uuid4().hex[:12]}"
    await _admin(backends.database_url, f'CREATE DATABASE "{name}"')
    yield urlunsplit(urlsplit(backends.database_url)._replace(path=f"/{name}"))
    # FORCE: a test may leave connections open (or its server was killed and restarted).
    await _admin(backends.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def kafka_bootstrap(backends: Backends) -> str:
    """The session's Kafka bootstrap servers (``host:port``)."""
    backends.restore()
    return backends.kafka_bootstrap


@pytest.fixture
def kafka_namespace() -> str:
    """A unique prefix (``t<hex>``) for this test's topic and consumer-group names."""
    return f"t{uuid.uuid4().hex[:12]}"
