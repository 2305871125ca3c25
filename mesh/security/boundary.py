"""A server's trust boundary from its settings: the guard, TLS, reflection, and the start rules.

``open_boundary`` is used by both composition roots. Its rules, each failing start-up with a
CRITICAL line that says what to set:

- **Real mode needs authentication**: a key source (``AUTH_KEYS_FILE`` or
  ``AUTH_KEYS_FROM_DATABASE``) or the explicit opt-out ``AUTH_DISABLED=true``, which is logged
  as a warning at every start. So does any server bound beyond loopback: only the embedded
  mode on 127.0.0.1 (``make run``) runs without authentication by default.
- One key source at most, and not together with the opt-out.
- TLS needs both ``TLS_CERT_FILE`` and ``TLS_KEY_FILE``; mutual TLS (``TLS_CLIENT_CA_FILE``)
  needs TLS and a key source (its ``san`` lines map certificates to principals).
- API keys over plaintext beyond loopback start, with a warning: they travel in clear text.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from mesh.runtime import StartupError
from mesh.security.guard import Guard
from mesh.security.keyfile import KeyFile
from mesh.security.keys import SCOPES, KeySourceError
from mesh.security.keytable import KeyTable
from mesh.security.limits import parse_rates
from mesh.security.tls import TlsError, server_credentials
from mesh.settings import Mode, ServiceSettings, SettingsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrustBoundary:
    """What a ``GrpcServer`` needs from the settings above (``summary`` is for banners)."""

    guard: Guard
    credentials: grpc.ServerCredentials | None
    reflection: bool
    summary: str

    @classmethod
    def unguarded(cls) -> TrustBoundary:
        """No authentication, plaintext, reflection on: for tests of the server itself."""
        return cls(Guard(None), None, True, "OFF")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.asynccontextmanager
async def open_boundary(
    settings: ServiceSettings, pool: Any = None
) -> AsyncIterator[TrustBoundary]:
    """The boundary of a server with ``settings``; ``pool`` is its PostgreSQL pool (real mode),
    for ``AUTH_KEYS_FROM_DATABASE``. The key source is watched until the block ends."""
    sec, server, mode = settings.security, settings.server, settings.backends.mode
    p = type(settings).prefix
    try:
        rates = parse_rates(sec.rate_limits, SCOPES)
        reflection = sec.reflection_on(mode)
    except (ValueError, SettingsError) as exc:
        raise StartupError(f"{p}RATE_LIMITS or {p}REFLECTION: {exc}") from exc
    source = _key_source(settings, pool)
    credentials = _credentials(settings)
    async with contextlib.AsyncExitStack() as stack:
        if source is not None:
            try:
                await stack.enter_async_context(source)
            except (OSError, UnicodeDecodeError, KeySourceError) as exc:
                raise StartupError(f"the key source cannot be used: {exc}") from exc
        tls = "TLS" + (" with client certificates" if sec.tls_client_ca_file else "")
        if source is None:
            summary = "OFF"
            if sec.auth_disabled:
                log.warning(
                    "%sAUTH_DISABLED=true: serving WITHOUT authentication; anyone who can "
                    "reach %s:%d can call every RPC",
                    p,
                    server.host,
                    server.grpc_port,
                )
                summary += f": {p}AUTH_DISABLED=true"
            else:
                log.info("authentication off: embedded mode on loopback (%s)", server.host)
                summary += ": embedded mode, loopback only"
        else:
            where = sec.auth_keys_file or "the api_keys table"
            summary = f"API keys from {where}"
            if credentials is None and not is_loopback(server.host):
                log.warning(
                    "API keys travel in clear text to %s: set %sTLS_CERT_FILE", server.host, p
                )
        if credentials is not None:
            summary += f", {tls}"
        guard = Guard(source, rates, sec.max_streams_per_principal)
        yield TrustBoundary(guard, credentials, reflection, summary)


def _key_source(settings: ServiceSettings, pool: Any) -> KeyFile | KeyTable | None:
    sec, server, mode = settings.security, settings.server, settings.backends.mode
    p = type(settings).prefix
    if sec.auth_keys_file and sec.auth_keys_from_database:
        raise StartupError(f"set {p}AUTH_KEYS_FILE or {p}AUTH_KEYS_FROM_DATABASE, not both")
    configured = bool(sec.auth_keys_file or sec.auth_keys_from_database)
    if configured and sec.auth_disabled:
        raise StartupError(f"{p}AUTH_DISABLED=true contradicts the key source: choose one")
    if sec.tls_client_ca_file and not configured:
        raise StartupError(
            f"{p}TLS_CLIENT_CA_FILE (mutual TLS) needs a key source whose 'san' lines map "
            f"client certificates to principals: set {p}AUTH_KEYS_FILE"
        )
    if sec.auth_keys_file:
        return KeyFile(sec.auth_keys_file, sec.auth_reload_seconds)
    if sec.auth_keys_from_database:
        if pool is None:
            raise StartupError(f"{p}AUTH_KEYS_FROM_DATABASE needs real mode (DATABASE_URL)")
        return KeyTable(pool, sec.auth_reload_seconds)
    if sec.auth_disabled:
        return None
    if mode is Mode.REAL or not is_loopback(server.host):
        where = "real mode" if mode is Mode.REAL else f"a server bound to {server.host}"
        raise StartupError(
            f"{where} needs authentication: set {p}AUTH_KEYS_FILE (API keys and mTLS "
            f"principals; see docs/security.md) or {p}AUTH_KEYS_FROM_DATABASE=true, or opt out "
            f"explicitly with {p}AUTH_DISABLED=true"
        )
    return None


def _credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    sec, p = settings.security, type(settings).prefix
    if bool(sec.tls_cert_file) != bool(sec.tls_key_file):
        raise StartupError(f"set both {p}TLS_CERT_FILE and {p}TLS_KEY_FILE, or neither")
    if not sec.tls_cert_file:
        if sec.tls_client_ca_file:
            raise StartupError(f"{p}TLS_CLIENT_CA_FILE needs {p}TLS_CERT_FILE and {p}TLS_KEY_FILE")
        return None
    try:
        return server_credentials(sec.tls_cert_file, sec.tls_key_file, sec.tls_client_ca_file)
    except TlsError as exc:
        raise StartupError(f"TLS: {p}{exc}") from exc
