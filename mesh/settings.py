"""Settings: frozen dataclasses built once from the environment in each entry point.

Each field names its environment variable and help text in its metadata, so ``--help`` lists every
variable with its default, and no other module reads the environment. Backends are all-or-nothing:
with none of ``REDIS_URL`` / ``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` set a server runs in
embedded mode (in-memory state, content store and event bus); with all of them set it runs in real
mode; a partial set is a configuration error, not a silent mix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Self, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """An environment variable is missing, malformed or inconsistent with the others."""


class Mode(StrEnum):
    EMBEDDED = "embedded"
    REAL = "real"


def env(name: str, help: str) -> Any:
    """Field metadata: the variable that sets this field and what it means."""
    return {"env": name, "help": help}


def setting(default: Any, name: str, help: str, *, secret: bool = False) -> Any:
    """A field set by the variable ``name``. A ``secret`` (a password, an API key) is left out
    of the settings' ``repr`` and of ``--help``, so no log line or traceback shows it."""
    return field(default=default, metadata={**env(name, help), "secret": secret}, repr=not secret)


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """Where the real backends are; all empty means embedded mode."""

    redis_url: str = setting(
        "", "REDIS_URL", "Redis URL, e.g. redis://127.0.0.1:6379/0 (rediss:// for TLS)"
    )
    redis_password: str = setting("", "REDIS_PASSWORD", "Redis AUTH password", secret=True)
    redis_tls_ca_file: str = setting(
        "", "REDIS_TLS_CA_FILE", "PEM CA of Redis's certificate (rediss://)"
    )
    database_url: str = setting(
        "", "DATABASE_URL", "PostgreSQL DSN, e.g. postgresql://u@h/db?sslmode=verify-full"
    )
    database_password: str = setting("", "DATABASE_PASSWORD", "PostgreSQL password", secret=True)
    database_tls_ca_file: str = setting(
        "", "DATABASE_TLS_CA_FILE", "PEM CA of PostgreSQL's certificate: verified TLS"
    )
    kafka_bootstrap: str = setting("", "KAFKA_BOOTSTRAP_SERVERS", "Kafka bootstrap, host:port[,..]")
    kafka_security_protocol: str = setting(
        "PLAINTEXT", "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: str = setting(
        "", "KAFKA_SASL_MECHANISM", "PLAIN (default), SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    kafka_sasl_username: str = setting("", "KAFKA_SASL_USERNAME", "SASL user name")
    kafka_sasl_password: str = setting("", "KAFKA_SASL_PASSWORD", "SASL password", secret=True)
    kafka_ssl_ca_file: str = setting("", "KAFKA_SSL_CA_FILE", "PEM CA of the brokers (SSL)")
    kafka_ssl_cert_file: str = setting(
        "", "KAFKA_SSL_CERT_FILE", "PEM client certificate, if the brokers require one"
    )
    kafka_ssl_key_file: str = setting("", "KAFKA_SSL_KEY_FILE", "PEM key of that certificate")
    kafka_namespace: str = setting("", "KAFKA_NAMESPACE", "topic prefix of this deployment")
    kafka_partitions: int = setting(3, "KAFKA_TOPIC_PARTITIONS", "partitions per created topic")
    kafka_commit_interval_ms: int = setting(
        1000, "KAFKA_COMMIT_INTERVAL_MS", "most frequent consumer offset commit (stop: at once)"
    )
    kafka_fetch_max_wait_ms: int = setting(
        100, "KAFKA_FETCH_MAX_WAIT_MS", "longest a consumer's fetch waits at the broker for records"
    )
    kafka_group_instance_id: str = setting(
        "",
        "KAFKA_GROUP_INSTANCE_ID",
        "static group membership: a name stable across restarts and unique among the replicas "
        "(a restarted replica then gets its partitions back at once)",
    )

    @property
    def mode(self) -> Mode:
        configured = [bool(self.redis_url), bool(self.database_url), bool(self.kafka_bootstrap)]
        if not any(configured):
            return Mode.EMBEDDED
        if not all(configured):
            raise SettingsError(
                "set all of REDIS_URL, DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS (real mode) "
                "or none of them (embedded mode)"
            )
        return Mode.REAL


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How a gRPC server listens and behaves; each server sets its own defaults."""

    host: str = setting(
        "127.0.0.1", "HOST", "interface to bind (0.0.0.0: every one; needs authentication)"
    )
    grpc_port: int = setting(0, "GRPC_PORT", "gRPC port (0 = any free port)")
    metrics_port: int = setting(0, "METRICS_PORT", "HTTP port of /metrics and /healthz (-1 = off)")
    max_message_bytes: int = setting(4 * 1024 * 1024, "MAX_MESSAGE_BYTES", "max gRPC message size")
    drain_seconds: float = setting(
        0.0,
        "DRAIN_SECONDS",
        "on SIGTERM, NOT_SERVING but still serving this long: clients watching health (the "
        "SDKs) stop sending at once; behind a load balancer, its health-check interval and more",
    )
    shutdown_grace_seconds: float = setting(
        10.0, "SHUTDOWN_GRACE_SECONDS", "then how long in-flight calls have to finish"
    )
    log_level: str = setting("INFO", "LOG_LEVEL", "DEBUG, INFO, WARNING, ERROR")
    log_format: str = setting(
        "text", "LOG_FORMAT", "text, or json (one object a line, with correlation and trace ids)"
    )
    uvloop: bool = setting(True, "USE_UVLOOP", "run on uvloop when installed")
    gc_threshold: int = setting(
        10_000,
        "GC_THRESHOLD",
        "objects allocated between young garbage collections (CPython: 700; 0 = leave it)",
    )


DEFAULT_RATE_LIMITS = (
    "batches:read=200/400,batches:write=50/100,pipelines:read=1000/2000,"
    "batches:register=500/1000,outcomes:record=2000/4000,deadletters:admin=10/20"
)


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """Who may call a server, over what, and how often (``docs/security.md``)."""

    auth_keys_file: str = setting(
        "", "AUTH_KEYS_FILE", "API keys (as SHA-256) and mTLS principals, JSON lines; reloaded"
    )
    auth_keys_from_database: bool = setting(
        False, "AUTH_KEYS_FROM_DATABASE", "read them from the api_keys table instead (real mode)"
    )
    auth_disabled: bool = setting(
        False, "AUTH_DISABLED", "serve WITHOUT authentication: the explicit, logged opt-out"
    )
    auth_reload_seconds: float = setting(
        2.0, "AUTH_RELOAD_SECONDS", "how often the key source is checked for changes"
    )
    tls_cert_file: str = setting("", "TLS_CERT_FILE", "PEM certificate chain: serve TLS")
    tls_key_file: str = setting("", "TLS_KEY_FILE", "PEM private key of that certificate")
    tls_client_ca_file: str = setting(
        "", "TLS_CLIENT_CA_FILE", "PEM CA of client certificates: mutual TLS, for every client"
    )
    reflection: str = setting(
        "auto", "REFLECTION", "server reflection: auto (on in embedded mode only), true, false"
    )
    rate_limits: str = setting(
        DEFAULT_RATE_LIMITS,
        "RATE_LIMITS",
        "calls per second per principal and scope: scope=rate[/burst],... (0 = unlimited)",
    )
    max_streams_per_principal: int = setting(
        100, "MAX_STREAMS_PER_PRINCIPAL", "open WatchBatch streams per principal (0 = unlimited)"
    )

    def reflection_on(self, mode: Mode) -> bool:
        value = self.reflection.strip().lower()
        if value == "auto":
            return mode is Mode.EMBEDDED
        if value in _TRUE | _FALSE:
            return value in _TRUE
        raise SettingsError(f"REFLECTION={self.reflection!r} is not auto, true or false")


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """The standard OpenTelemetry variables that decide whether a server traces (``mesh.tracing``).

    The SDK reads the rest of its standard variables itself (sampler, batch processor, the
    exporter's endpoint, headers and timeouts, resource attributes).
    """

    sdk_disabled: bool = setting(False, "OTEL_SDK_DISABLED", "true turns tracing off whatever else")
    traces_exporter: str = setting(
        "",
        "OTEL_TRACES_EXPORTER",
        "span exporters, comma-separated: otlp (the otlp extra), console, none; unset with an "
        "OTLP endpoint means otlp, unset without one means tracing off",
    )
    otlp_endpoint: str = setting("", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTLP collector URL")
    otlp_traces_endpoint: str = setting(
        "", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTLP collector URL for traces only"
    )
    otlp_protocol: str = setting(
        "", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc (default) or http/protobuf"
    )
    service_name: str = setting(
        "", "OTEL_SERVICE_NAME", "service.name of the spans (default: the server's name)"
    )

    @property
    def exporters(self) -> tuple[str, ...]:
        """The exporters asked for; empty means tracing is off."""
        if self.sdk_disabled:
            return ()
        names = [n.strip() for n in self.traces_exporter.split(",") if n.strip()]
        if not names and (self.otlp_endpoint or self.otlp_traces_endpoint):
            names = ["otlp"]
        return tuple(dict.fromkeys(n for n in names if n != "none"))


def _parse(raw: str, kind: Any, name: str) -> Any:
    try:
        if kind in (bool, "bool"):
            lowered = raw.strip().lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError(raw)
            return lowered in _TRUE
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        return raw
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind}") from exc


def from_env(
    cls: type[T],
    environ: Mapping[str, str],
    prefix: str = "",
    defaults: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls``: ``<prefix><VAR>`` wins over ``<VAR>``, then ``defaults``, then the field's."""
    values: dict[str, Any] = dict(defaults or {})
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f.metadata["env"]
        for candidate in (prefix + name, name) if prefix else (name,):
            if candidate in environ:
                values[f.name] = _parse(environ[candidate], f.type, candidate)
                break
    return cls(**values)


def backends_from_env(environ: Mapping[str, str]) -> BackendSettings:
    """The backends a process serves with: ``SettingsError`` for a malformed value or a partial
    set of real backends, before the process starts anything."""
    backends = from_env(BackendSettings, environ)
    backends.mode  # noqa: B018  (read for its check: raises for a partial set)
    return backends


def describe(cls: type[Any], prefix: str = "", defaults: Mapping[str, Any] | None = None) -> str:
    """Help text listing every variable of ``cls`` with its default."""
    lines = []
    for f in dataclasses.fields(cls):
        default = (defaults or {}).get(f.name, f.default)
        variable = f.metadata["env"]
        shown = f"{prefix}{variable} (or {variable})" if prefix else variable
        value = "secret" if f.metadata.get("secret") else f"default: {default!r}"
        lines.append(f"  {shown:<44} {f.metadata['help']} [{value}]")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """A server's settings: how it listens, where its backends are, and (in each server's
    subclass) its own ``options``, an instance of ``options_type``.

    Server variables take the server's ``prefix`` (``CONDUCTOR_GRPC_PORT``) or none
    (``GRPC_PORT``); backend variables are shared by both servers.
    """

    server: ServerSettings = field(default_factory=ServerSettings)
    backends: BackendSettings = field(default_factory=BackendSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)

    prefix: ClassVar[str] = ""
    server_defaults: ClassVar[Mapping[str, Any]] = {}
    options_type: ClassVar[type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        """``SettingsError`` for a malformed value or a partial set of real backends."""
        values: dict[str, Any] = {
            "server": from_env(ServerSettings, environ, cls.prefix, cls.server_defaults),
            "backends": backends_from_env(environ),
            "security": from_env(SecuritySettings, environ, cls.prefix),
            "telemetry": from_env(TelemetrySettings, environ),  # the standard names: no prefix
            "options": from_env(cls.options_type, environ, cls.prefix),
        }
        return cls(**values)

    @classmethod
    def help_text(cls) -> str:
        """Every environment variable with its default, for ``--help``."""
        return (
            "environment variables:\n"
            + describe(ServerSettings, cls.prefix, cls.server_defaults)
            + "\n"
            + describe(BackendSettings)
            + "\n"
            + describe(SecuritySettings, cls.prefix)
            + "\n"
            + describe(TelemetrySettings)
            + "\n"
            + describe(cls.options_type, cls.prefix)
        )
