"""Settings of the BatchService, built once from the environment by ``__main__``."""

from __future__ import annotations

from dataclasses import dataclass, field

from mesh.postgres.kept import KEPT_ESSAYS
from mesh.settings import ServiceSettings, setting


@dataclass(frozen=True, slots=True)
class BatchOptions:
    conductor_address: str = setting("127.0.0.1:5050", "CONDUCTOR_ADDRESS", "conductor host:port")
    conductor_timeout_seconds: float = setting(5.0, "CONDUCTOR_TIMEOUT_SECONDS", "RPC deadline")
    conductor_api_key: str = setting(
        "", "CONDUCTOR_API_KEY", "this service's API key at the conductor", secret=True
    )
    conductor_tls: bool = setting(False, "CONDUCTOR_TLS", "call the conductor over TLS")
    conductor_ca_file: str = setting(
        "", "CONDUCTOR_CA_FILE", "PEM CA of the conductor's certificate (TLS; default: system)"
    )
    conductor_cert_file: str = setting(
        "", "CONDUCTOR_CLIENT_CERT_FILE", "PEM client certificate for mutual TLS to the conductor"
    )
    conductor_key_file: str = setting(
        "", "CONDUCTOR_CLIENT_KEY_FILE", "PEM private key of that client certificate"
    )
    conductor_server_name: str = setting(
        "", "CONDUCTOR_SERVER_NAME", "name in the conductor's certificate, if not its host"
    )
    content_service_url: str = setting("", "CONTENT_SERVICE_URL", "HTTP content service (optional)")
    consumer_group: str = setting("huleedu-batch-service", "CONSUMER_GROUP", "Kafka group")
    db_pool_size: int = setting(10, "DB_POOL_SIZE", "PostgreSQL pool size")
    kept_essays: int = setting(
        KEPT_ESSAYS,
        "KEPT_ESSAYS",
        "essays' worth of run progress kept between writes (real mode; 0: read every time)",
    )
    watch_poll_seconds: float = setting(
        1.0, "WATCH_POLL_SECONDS", "WatchBatch re-reads a run at least this often"
    )
    deadline_poll_seconds: float = setting(
        1.0, "DEADLINE_POLL_SECONDS", "how often step deadlines are checked (timeouts)"
    )


@dataclass(frozen=True, slots=True)
class BatchSettings(ServiceSettings):
    options: BatchOptions = field(default_factory=BatchOptions)

    prefix = "BATCH_"
    server_defaults = {"grpc_port": 5000, "metrics_port": 9000, "drain_seconds": 1.0}
    options_type = BatchOptions
