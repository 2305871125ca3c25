"""The security tier: both servers as processes on real backends, behind their trust boundary.

One mesh serves the whole tier (a process start per test would be most of its time):

- the **conductor** serves TLS and requires a client certificate from the test CA (mutual
  TLS). The BatchService's certificate names the principal ``batch-service``; the tests'
  certificate (``caller``) names none, so a test's principal is its API key;
- the **BatchService** serves TLS; its callers authenticate with API keys; it calls the
  conductor with its client certificate;
- both read one key file (reloaded every 0.2 s) and share one fresh database.

Principals (``PRINCIPALS``): one per scope holding only that scope (``only-<scope>``), an admin
with every scope, an expired one, the worker and batch-writer of the issue's examples, one with a
tiny rate and one with a tiny stream limit, and two certificate principals.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest
import pytest_asyncio

from mesh.security.keys import SCOPES, key_digest, new_key
from tests.conftest import Backends
from tests.e2e.conftest import ServerProcess, backend_env, serving
from tests.support.pki import Issued, Pki

ALL = sorted(SCOPES)
PRINCIPALS: dict[str, dict[str, Any]] = {
    **{f"only-{scope}": {"scopes": [scope]} for scope in ALL},
    "admin": {"scopes": ALL},
    "expired": {"scopes": ALL, "expires": "2001-01-01"},
    "worker": {"scopes": ["outcomes:record"]},
    "writer": {"scopes": ["batches:write", "batches:read"]},
    "limited": {"scopes": ["batches:read"], "rate_limits": {"batches:read": "1/1"}},
    "streamer": {"scopes": ["batches:read", "batches:write"], "max_streams": 2},
}
CERTIFICATES = {  # principal -> (its certificate's name, scopes)
    "batch-service": ("batch-service.huleedu.test", ["batches:register", "pipelines:read"]),
    "worker-cert": ("worker.huleedu.test", ["outcomes:record"]),
}


@dataclass
class Mesh:
    pki: Pki
    keys: dict[str, str]  # principal -> its API key
    keys_file: Path
    conductor: ServerProcess
    batch: ServerProcess
    database_url: str
    certificates: dict[str, Issued]  # "caller", "batch-service", "worker-cert"

    def server(self, name: str) -> ServerProcess:
        return self.conductor if name == "conductor" else self.batch

    def credentials(self, server: str, certificate: str = "caller") -> grpc.ChannelCredentials:
        """TLS trusting the test CA; for the conductor, with a client certificate."""
        ca = self.pki.ca.cert.read_bytes()
        if server != "conductor":
            return grpc.ssl_channel_credentials(ca)
        issued = self.certificates[certificate]
        return grpc.ssl_channel_credentials(ca, issued.key.read_bytes(), issued.cert.read_bytes())

    def channel(self, server: str, certificate: str = "caller") -> grpc.aio.Channel:
        return grpc.aio.secure_channel(
            self.server(server).address, self.credentials(server, certificate)
        )

    def bearer(self, principal: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.keys[principal]}"),)


def write_keys(path: Path, keys: dict[str, str], extra: Sequence[dict[str, Any]] = ()) -> None:
    """The tier's key file: every principal of ``PRINCIPALS`` and ``CERTIFICATES``, and
    ``extra`` lines."""
    lines = [
        {"principal": name, "sha256": key_digest(keys[name]), **entry}
        for name, entry in PRINCIPALS.items()
    ]
    lines += [
        {"principal": name, "san": san, "scopes": scopes}
        for name, (san, scopes) in CERTIFICATES.items()
    ]
    path.write_text("\n".join(json.dumps(line) for line in [*lines, *extra]) + "\n")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def mesh(backends: Backends, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    folder = tmp_path_factory.mktemp("security")
    pki = Pki(folder)
    certificates = {
        "caller": pki.ca.issue("caller", dns=("caller.huleedu.test",)),
        **{name: pki.ca.issue(name, dns=(san,)) for name, (san, _) in CERTIFICATES.items()},
    }
    keys = {name: new_key() for name in PRINCIPALS}
    keys_file = folder / "keys.jsonl"
    write_keys(keys_file, keys)
    database = await _create_database(backends.database_url)
    namespace = f"sec{uuid.uuid4().hex[:10]}"
    common = backend_env(backends, database, namespace)
    del common["AUTH_DISABLED"], common["REFLECTION"]  # the defaults of real mode
    common |= {"AUTH_KEYS_FILE": str(keys_file), "AUTH_RELOAD_SECONDS": "0.2"}
    conductor = ServerProcess(
        "conductor_server",
        {
            **common,
            "CONDUCTOR_TLS_CERT_FILE": str(pki.server.cert),
            "CONDUCTOR_TLS_KEY_FILE": str(pki.server.key),
            "CONDUCTOR_TLS_CLIENT_CA_FILE": str(pki.ca.cert),
            "CONDUCTOR_CONSUMER_GROUP": f"{namespace}-conductor",
        },
        "CONDUCTOR_",
        folder / "conductor.log",
    )
    batch = ServerProcess(
        "batch_server",
        {
            **common,
            "BATCH_TLS_CERT_FILE": str(pki.server.cert),
            "BATCH_TLS_KEY_FILE": str(pki.server.key),
            "BATCH_CONDUCTOR_ADDRESS": conductor.address,
            "CONDUCTOR_CA_FILE": str(pki.ca.cert),
            "CONDUCTOR_CLIENT_CERT_FILE": str(certificates["batch-service"].cert),
            "CONDUCTOR_CLIENT_KEY_FILE": str(certificates["batch-service"].key),
            "BATCH_CONSUMER_GROUP": f"{namespace}-batch",
            "BATCH_WATCH_POLL_SECONDS": "0.2",
        },
        "BATCH_",
        folder / "batch.log",
    )
    running = Mesh(pki, keys, keys_file, conductor, batch, database, certificates)
    conductor.credentials = running.credentials("conductor")
    batch.credentials = running.credentials("batch")
    try:
        async with serving(conductor, batch):
            yield running
    finally:
        await _drop_database(backends.database_url, database)


async def _create_database(server_url: str) -> str:
    name = f"s_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


async def _drop_database(server_url: str, database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def environ_without_credentials() -> dict[str, str]:
    """The test process's environment without the SDK's credential variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HULEEDU_")}
