"""Channels with the retry policy, keepalive, message limits and credentials both SDK clients
share.

``Credentials`` say how a client proves who it is (an API key, sent as ``authorization: Bearer
<key>`` metadata on every call; or a client certificate, for mutual TLS) and how it checks the
server (TLS against a CA file or the system's roots). ``Credentials.from_env`` reads them from
``HULEEDU_API_KEY`` (or ``HULEEDU_API_KEY_FILE``), ``HULEEDU_TLS``, ``HULEEDU_TLS_CA_FILE``,
``HULEEDU_TLS_CERT_FILE``, ``HULEEDU_TLS_KEY_FILE`` and ``HULEEDU_TLS_SERVER_NAME``. Off
loopback, send a key only over TLS: on a plaintext channel anyone on the path can read it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from mesh.security.tls import channel_credentials

DEFAULT_TIMEOUT_SECONDS = 10.0
ENV_PREFIX = "HULEEDU_"


@dataclass(frozen=True)
class Credentials:
    """A client's credentials; the default (all empty) is a plaintext channel without a key."""

    api_key: str = field(default="", repr=False)
    tls: bool = False  # TLS even without a CA file (the system's roots)
    ca_file: str = ""  # PEM CA that signed the server's certificate
    cert_file: str = ""  # PEM client certificate chain, for mutual TLS
    key_file: str = ""  # and its private key
    server_name: str = ""  # the name in the server's certificate, when not the target's host

    @property
    def secure(self) -> bool:
        return self.tls or bool(self.ca_file or self.cert_file)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str], prefix: str = ENV_PREFIX) -> Credentials:
        """From ``<prefix>API_KEY`` (or a file named by ``<prefix>API_KEY_FILE``) and
        ``<prefix>TLS``, ``<prefix>TLS_CA_FILE``, ``_CERT_FILE``, ``_KEY_FILE``,
        ``_SERVER_NAME``."""
        key = environ.get(f"{prefix}API_KEY", "")
        key_file = environ.get(f"{prefix}API_KEY_FILE", "")
        if key_file and not key:
            key = read_key(key_file)
        return cls(
            api_key=key,
            tls=environ.get(f"{prefix}TLS", "").strip().lower() in {"1", "true", "yes", "on"},
            ca_file=environ.get(f"{prefix}TLS_CA_FILE", ""),
            cert_file=environ.get(f"{prefix}TLS_CERT_FILE", ""),
            key_file=environ.get(f"{prefix}TLS_KEY_FILE", ""),
            server_name=environ.get(f"{prefix}TLS_SERVER_NAME", ""),
        )


def read_key(path: str) -> str:
    """An API key from a file (its first line; surrounding whitespace ignored)."""
    with open(path, encoding="utf-8") as file:
        return file.readline().strip()


def _service_config(methods: Sequence[str]) -> str:
    # gRPC's own retry machinery: transparent, bounded, with backoff, for the idempotent methods
    # only (a repeat of any other could do its work twice). Only UNAVAILABLE is retried: every
    # other code is an answer.
    #
    # Client-side health checking: the channel watches each server's grpc.health.v1 service
    # "accepting" (SERVING from start-up until the drain: mesh.grpc.health) and sends nothing to
    # a server that is not; with every address so, a call fails UNAVAILABLE at once (and an
    # idempotent one is retried as above). A server that drains (DRAIN_SECONDS) therefore
    # receives no new call before it stops, so no call can be caught queued by its shutdown.
    # Health checking needs round_robin (it balances over every address the name resolves to).
    names = []
    for full in methods:
        service, _, method = full.partition("/")
        names.append({"service": service, "method": method})
    health: dict[str, object] = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": "accepting"},
    }
    if not names:
        return json.dumps(health)
    return json.dumps(
        {
            **health,
            "methodConfig": [
                {
                    "name": names,
                    "retryPolicy": {
                        "maxAttempts": 5,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }
    )


def open_channel(
    target: str,
    idempotent: Sequence[str] = (),
    credentials: Credentials | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A channel to ``target`` (``host:port``) retrying the ``idempotent`` methods (full names,
    ``package.Service/Method``) on UNAVAILABLE: TLS when ``credentials`` ask for it, else
    plaintext; ``interceptors`` wrap every call."""
    options: list[tuple[str, str | int]] = [
        ("grpc.service_config", _service_config(idempotent)),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ]
    wrapped = list(interceptors) or None
    if credentials is None or not credentials.secure:
        return grpc.aio.insecure_channel(target, options=options, interceptors=wrapped)
    if credentials.server_name:
        options.append(("grpc.ssl_target_name_override", credentials.server_name))
    tls = channel_credentials(
        credentials.ca_file, credentials.cert_file, credentials.key_file, prefix="TLS_"
    )
    return grpc.aio.secure_channel(target, tls, options=options, interceptors=wrapped)
