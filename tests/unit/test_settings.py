"""Settings come from the environment once, with per-server prefixes and defaults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from batch_server.settings import BatchSettings
from conductor_server.settings import ConductorSettings
from mesh.settings import BackendSettings, Mode, SettingsError, from_env


def test_each_server_has_its_design_ports_by_default() -> None:
    conductor = ConductorSettings.from_env({})
    batch = BatchSettings.from_env({})
    assert (conductor.server.grpc_port, conductor.server.metrics_port) == (5050, 9050)
    assert (batch.server.grpc_port, batch.server.metrics_port) == (5000, 9000)


def test_prefixed_variable_wins_over_the_shared_one() -> None:
    settings = ConductorSettings.from_env({"GRPC_PORT": "7000", "CONDUCTOR_GRPC_PORT": "7001"})
    assert settings.server.grpc_port == 7001
    assert ConductorSettings.from_env({"GRPC_PORT": "7000"}).server.grpc_port == 7000


def test_no_backend_means_embedded_and_all_means_real() -> None:
    assert ConductorSettings.from_env({}).backends.mode is Mode.EMBEDDED
    real = {
        "REDIS_URL": "redis://h/0",
        "DATABASE_URL": "postgresql://h/db",
        "KAFKA_BOOTSTRAP_SERVERS": "h:9092",
    }
    assert ConductorSettings.from_env(real).backends.mode is Mode.REAL


def test_a_partial_backend_set_is_an_error_not_a_silent_mix() -> None:
    with pytest.raises(SettingsError, match="all of"):
        ConductorSettings.from_env({"REDIS_URL": "redis://h/0"})


def test_backend_settings_alone_take_a_partial_set() -> None:
    """``huleedu dlq`` reads only the Kafka settings of the same variables."""
    backends = from_env(BackendSettings, {"KAFKA_BOOTSTRAP_SERVERS": "h:9092"})
    assert backends.kafka_bootstrap == "h:9092"


@pytest.mark.parametrize("raw", ["abc", "1.5"])
def test_malformed_numbers_name_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="CONDUCTOR_GRPC_PORT"):
        ConductorSettings.from_env({"CONDUCTOR_GRPC_PORT": raw})


def test_booleans_accept_the_usual_spellings() -> None:
    assert BatchSettings.from_env({"USE_UVLOOP": "off"}).server.uvloop is False
    with pytest.raises(SettingsError):
        BatchSettings.from_env({"USE_UVLOOP": "maybe"})


@pytest.mark.parametrize("module", ["conductor_server", "batch_server"])
def test_help_lists_every_variable(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True
    )
    assert "REDIS_URL" in result.stdout
    assert "GRPC_PORT" in result.stdout


def test_servers_bind_loopback_unless_told_otherwise() -> None:
    assert ConductorSettings.from_env({}).server.host == "127.0.0.1"
    assert BatchSettings.from_env({"BATCH_HOST": "0.0.0.0"}).server.host == "0.0.0.0"


def test_security_settings_take_the_server_prefix() -> None:
    environ = {"AUTH_KEYS_FILE": "shared.jsonl", "BATCH_AUTH_KEYS_FILE": "batch.jsonl"}
    assert ConductorSettings.from_env(environ).security.auth_keys_file == "shared.jsonl"
    assert BatchSettings.from_env(environ).security.auth_keys_file == "batch.jsonl"


def test_secrets_are_never_shown_in_repr_or_help() -> None:
    settings = BatchSettings.from_env(
        {"CONDUCTOR_API_KEY": "hk_very_secret", "KAFKA_SASL_PASSWORD": "pw_very_secret"}
    )
    assert settings.options.conductor_api_key == "hk_very_secret"
    assert "very_secret" not in repr(settings)
    help_text = BatchSettings.help_text()
    assert "CONDUCTOR_API_KEY" in help_text
    assert "[secret]" in help_text


BACKEND_VARIABLES = ("REDIS_URL", "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")


@pytest.mark.parametrize(
    ("module", "environ", "message"),
    [
        (
            "conductor_server",
            {"KAFKA_COMMIT_INTERVAL_MS": "abc"},
            "KAFKA_COMMIT_INTERVAL_MS='abc' is not a valid int",
        ),
        ("batch_server", {"REDIS_URL": "redis://h/0"}, "set all of REDIS_URL, DATABASE_URL"),
        ("conductor_server", {"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is not text or json"),
        ("launcher", {"BATCH_GRPC_PORT": "abc"}, "BATCH_GRPC_PORT='abc' is not a valid int"),
        ("launcher.workers", {"KAFKA_BOOTSTRAP_SERVERS": "h:9092"}, "set all of REDIS_URL"),
    ],
)
def test_a_bad_setting_ends_the_command_as_a_usage_error_not_a_traceback(
    module: str, environ: dict[str, str], message: str
) -> None:
    """Like a bad option: ``prog: error: ...`` on stderr and exit status 2, nothing started."""
    inherited = {k: v for k, v in os.environ.items() if k not in BACKEND_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-m", module],
        env={**inherited, **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"python -m {module}: error: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
