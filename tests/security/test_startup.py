"""Start-up rules on real processes: real mode needs authentication or the explicit opt-out,
and backend credentials come from settings without ever being printed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bench.harness.ports import free_port
from tests.conftest import Backends
from tests.e2e.conftest import ROOT, ServerProcess, backend_env
from tests.security.conftest import environ_without_credentials
from tests.support.polling import eventually

REDIS_PASSWORD = "redis-pw-4f2a9c"
SASL_PASSWORD = "sasl-pw-8d1e77"


async def _exit_of(env: dict[str, str], log: Path) -> int:
    """Run the conductor until it exits by itself (it must, within 60 s)."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "conductor_server", cwd=ROOT, env=env, stdout=out, stderr=out
        )
        try:
            return await asyncio.wait_for(process.wait(), 60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def _env(backends: Backends, database_url: str, namespace: str, **extra: str) -> dict[str, str]:
    env = {**environ_without_credentials(), **backend_env(backends, database_url, namespace)}
    del env["AUTH_DISABLED"]
    return env | {
        "CONDUCTOR_HOST": "127.0.0.1",
        "CONDUCTOR_GRPC_PORT": str(free_port()),
        "CONDUCTOR_METRICS_PORT": str(free_port()),
        **extra,
    }


async def test_real_mode_without_authentication_refuses_to_start(
    backends: Backends, database_url: str, kafka_namespace: str, tmp_path: Path
) -> None:
    log = tmp_path / "conductor.log"
    assert await _exit_of(_env(backends, database_url, kafka_namespace), log) == 1
    text = log.read_text()
    assert "CRITICAL" in text
    assert "real mode needs authentication: set CONDUCTOR_AUTH_KEYS_FILE" in text
    assert "AUTH_DISABLED=true" in text


async def test_the_explicit_opt_out_starts_with_a_warning(
    backends: Backends, database_url: str, kafka_namespace: str, tmp_path: Path
) -> None:
    env = _env(backends, database_url, kafka_namespace, AUTH_DISABLED="true")
    server = ServerProcess("conductor_server", env, "CONDUCTOR_", tmp_path / "conductor.log")
    try:
        await server.start()
        assert await server.terminate() == 0
    finally:
        await server.kill()
    assert "WARNING  mesh.security.boundary" in server.logs()
    assert "serving WITHOUT authentication" in server.logs()


def test_help_names_the_secret_settings_without_values() -> None:
    env = {**environ_without_credentials(), "CONDUCTOR_API_KEY": "hk_in_the_environment"}
    shown = subprocess.run(
        [sys.executable, "-m", "batch_server", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for variable in ("CONDUCTOR_API_KEY", "KAFKA_SASL_PASSWORD", "REDIS_PASSWORD"):
        assert f"{variable} " in shown or f"{variable})" in shown
    assert "hk_in_the_environment" not in shown


@pytest.fixture
def guarded_redis(tmp_path: Path) -> Iterator[str]:
    """A Redis of this test's own that requires ``REDIS_PASSWORD``; its URL (without it)."""
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            REDIS_PASSWORD,
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, password=REDIS_PASSWORD)

    def answering() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        asyncio.run(eventually(answering, 10, what="the private Redis"))
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        process.terminate()
        process.wait(10)


async def test_backend_passwords_come_from_settings_and_are_never_printed(
    backends: Backends,
    database_url: str,
    kafka_namespace: str,
    tmp_path: Path,
    guarded_redis: str,
) -> None:
    env = _env(
        backends,
        database_url,
        kafka_namespace,
        AUTH_DISABLED="true",
        REDIS_URL=guarded_redis,
        REDIS_PASSWORD=REDIS_PASSWORD,
        KAFKA_SASL_PASSWORD=SASL_PASSWORD,
        LOG_LEVEL="DEBUG",
    )
    server = ServerProcess("conductor_server", env, "CONDUCTOR_", tmp_path / "good.log")
    try:
        await server.start()  # SERVING: it reached the guarded Redis with the password
        assert await server.terminate() == 0
    finally:
        await server.kill()
    wrong = env | {"REDIS_PASSWORD": "not-" + REDIS_PASSWORD}
    bad_log = tmp_path / "bad.log"
    assert await _exit_of(wrong, bad_log) == 1
    assert "Redis unreachable" in bad_log.read_text()
    for log in (server.log_path, bad_log):
        text = log.read_text()
        assert REDIS_PASSWORD not in text
        assert SASL_PASSWORD not in text
