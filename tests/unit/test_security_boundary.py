"""Start rules of the trust boundary, and a key file that changes under a running server."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from conductor_server.settings import ConductorSettings
from mesh.runtime import StartupError
from mesh.security.boundary import open_boundary
from mesh.security.keyfile import KeyFile
from mesh.security.keys import key_digest, new_key

REAL = {
    "REDIS_URL": "redis://h/0",
    "DATABASE_URL": "postgresql://h/db",
    "KAFKA_BOOTSTRAP_SERVERS": "h:9092",
}


def keys_file(tmp_path: Path, *keys: str, scopes: tuple[str, ...] = ("batches:read",)) -> Path:
    path = tmp_path / "keys.jsonl"
    lines = [
        json.dumps({"principal": f"p{i}", "sha256": key_digest(k), "scopes": list(scopes)})
        for i, k in enumerate(keys)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_embedded_mode_on_loopback_runs_without_auth_and_says_so() -> None:
    async with open_boundary(ConductorSettings.from_env({})) as boundary:
        assert not boundary.guard.enabled
        assert boundary.reflection
        assert boundary.credentials is None
        assert boundary.summary == "OFF: embedded mode, loopback only"


@pytest.mark.parametrize(
    ("environ", "complaint"),
    [
        (REAL, "real mode needs authentication: set CONDUCTOR_AUTH_KEYS_FILE"),
        ({"HOST": "0.0.0.0"}, "a server bound to 0.0.0.0 needs authentication"),
        ({"AUTH_KEYS_FILE": "k", "AUTH_DISABLED": "true"}, "contradicts the key source"),
        ({"AUTH_KEYS_FILE": "k", "AUTH_KEYS_FROM_DATABASE": "true"}, "not both"),
        ({"AUTH_KEYS_FROM_DATABASE": "true"}, "needs real mode"),
        ({"TLS_CERT_FILE": "c.pem"}, "set both CONDUCTOR_TLS_CERT_FILE and"),
        ({"AUTH_DISABLED": "true", "TLS_CLIENT_CA_FILE": "ca.pem"}, "needs a key source"),
        ({"AUTH_KEYS_FILE": "/nonexistent/keys.jsonl"}, "the key source cannot be used"),
        ({"RATE_LIMITS": "root=5"}, "RATE_LIMITS"),
        ({"REFLECTION": "maybe"}, "REFLECTION"),
    ],
)
async def test_unsafe_or_contradictory_settings_refuse_to_start(
    environ: dict[str, str], complaint: str
) -> None:
    with pytest.raises(StartupError, match=complaint):
        async with open_boundary(ConductorSettings.from_env(environ)):
            pass


async def test_the_explicit_opt_out_is_a_warning_at_every_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = ConductorSettings.from_env({**REAL, "AUTH_DISABLED": "true", "HOST": "0.0.0.0"})
    with caplog.at_level(logging.WARNING):
        async with open_boundary(settings) as boundary:
            assert not boundary.guard.enabled
            assert not boundary.reflection  # auto: off in real mode
    [warning] = [r for r in caplog.records if "AUTH_DISABLED" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "WITHOUT authentication" in warning.getMessage()


async def test_keys_over_plaintext_beyond_loopback_are_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = keys_file(tmp_path, new_key())
    settings = ConductorSettings.from_env({"AUTH_KEYS_FILE": str(path), "HOST": "0.0.0.0"})
    with caplog.at_level(logging.WARNING):
        async with open_boundary(settings) as boundary:
            assert boundary.guard.enabled
    assert any("clear text" in r.getMessage() for r in caplog.records)


async def test_a_changed_key_file_is_reloaded_and_a_broken_one_keeps_the_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = new_key(), new_key()
    path = keys_file(tmp_path, first)
    async with KeyFile(str(path), interval=3600) as source:  # checked by hand below
        assert source.index.for_key(first)[0] is not None
        keys_file(tmp_path, first, second)
        os.utime(path, ns=(1, 1))  # a distinct stamp even within the clock's resolution
        source.check()
        assert source.index.for_key(second)[0] is not None
        path.write_text("not json\n")
        with caplog.at_level(logging.ERROR):
            source.check()
            source.check()  # the same broken version: one ERROR line
        assert source.index.for_key(second)[0] is not None
        assert len([r for r in caplog.records if "keeping the previous keys" in r.message]) == 1
        path.unlink()
        source.check()
        assert source.index.for_key(first)[0] is not None
        keys_file(tmp_path, second)
        source.check()
        assert source.index.for_key(first)[0] is None
