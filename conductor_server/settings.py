"""Settings of the PipelineConductor, built once from the environment by ``__main__``."""

from __future__ import annotations

from dataclasses import dataclass, field

from mesh.postgres.kept import KEPT_ESSAYS
from mesh.settings import ServiceSettings, setting


@dataclass(frozen=True, slots=True)
class ConductorOptions:
    pipelines_path: str = setting("", "PIPELINES_PATH", "pipeline YAML (default: the shipped file)")
    redis_ttl_seconds: int = setting(7 * 24 * 3600, "REDIS_TTL_SECONDS", "TTL of a batch's keys")
    consumer_group: str = setting("huleedu-pipeline-conductor", "CONSUMER_GROUP", "Kafka group")
    db_pool_size: int = setting(10, "DB_POOL_SIZE", "PostgreSQL pool size")
    kept_essays: int = setting(
        KEPT_ESSAYS,
        "KEPT_ESSAYS",
        "essays' worth of batch tallies kept between writes (real mode; 0: read every time)",
    )


@dataclass(frozen=True, slots=True)
class ConductorSettings(ServiceSettings):
    options: ConductorOptions = field(default_factory=ConductorOptions)

    prefix = "CONDUCTOR_"
    server_defaults = {"grpc_port": 5050, "metrics_port": 9050, "drain_seconds": 1.0}
    options_type = ConductorOptions
