"""Settings of the PipelineConductor, built once from the environment by ``__main__``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mesh.settings import BackendSettings, ServerSettings, describe, from_env, setting

PREFIX = "CONDUCTOR_"
SERVER_DEFAULTS = {"grpc_port": 5050, "metrics_port": 9050}


@dataclass(frozen=True, slots=True)
class ConductorOptions:
    pipelines_path: str = setting("", "PIPELINES_PATH", "pipeline YAML (default: the shipped file)")
    redis_ttl_seconds: int = setting(7 * 24 * 3600, "REDIS_TTL_SECONDS", "TTL of a batch's keys")
    consumer_group: str = setting("huleedu-pipeline-conductor", "CONSUMER_GROUP", "Kafka group")
    db_pool_size: int = setting(10, "DB_POOL_SIZE", "PostgreSQL pool size")


@dataclass(frozen=True, slots=True)
class ConductorSettings:
    server: ServerSettings = field(default_factory=ServerSettings)
    backends: BackendSettings = field(default_factory=BackendSettings)
    options: ConductorOptions = field(default_factory=ConductorOptions)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ConductorSettings:
        return cls(
            server=from_env(ServerSettings, environ, PREFIX, SERVER_DEFAULTS),
            backends=from_env(BackendSettings, environ),
            options=from_env(ConductorOptions, environ, PREFIX),
        )


def help_text() -> str:
    return (
        "environment variables:\n"
        + describe(ServerSettings, PREFIX, SERVER_DEFAULTS)
        + "\n"
        + describe(BackendSettings)
        + "\n"
        + describe(ConductorOptions, PREFIX)
    )
