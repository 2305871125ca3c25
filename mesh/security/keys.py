"""Principals and their credentials: API keys (kept only as SHA-256 hashes) and mTLS names.

A key source is JSON lines, one credential per line (``#`` comments and blank lines allowed)::

    {"principal": "ops-alice", "sha256": "<hex of the key's SHA-256>",
     "scopes": ["batches:read", "pipelines:read"], "expires": "2026-12-31T00:00:00Z"}
    {"principal": "batch-service", "san": "batch-service.huleedu.internal",
     "scopes": ["batches:register", "pipelines:read"]}

- ``principal``: the name that appears in the audit log (1-128 printable characters);
- exactly one of ``sha256`` (an API key, sent as ``authorization: Bearer <key>``) or ``san``
  (a client certificate's subject alternative name, for mutual TLS);
- ``scopes``: at least one of ``mesh.security.scopes.Scope``;
- optional ``expires`` (ISO 8601; a date means midnight UTC), ``rate_limits`` (scope to
  ``per_second[/burst]``, overriding the server's ``RATE_LIMITS``) and ``max_streams``.

A principal may have several lines (several keys during a rotation, a key and a certificate).
The key itself is never stored: ``new_key`` makes one (``hk_`` and 43 random URL-safe
characters), ``key_digest`` hashes it. Lookups hash the presented key once (SHA-256), find the
digest in a dict and confirm it with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from mesh.security.limits import Rate, parse_rate
from mesh.security.scopes import Scope

KEY_PREFIX = "hk_"
_NAME = re.compile(r"^[A-Za-z0-9._:@/+-]{1,128}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = {"principal", "sha256", "san", "scopes", "expires", "rate_limits", "max_streams"}
SCOPES = frozenset(s.value for s in Scope)


class KeySourceError(ValueError):
    """A key source that cannot be used; names each bad line, never a secret."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a name, its scopes, and what it is allowed."""

    name: str
    scopes: frozenset[str]
    expires_at: float | None = None  # Unix time; None: never
    rates: Mapping[str, Rate | None] = field(default_factory=dict)  # per-scope overrides
    max_streams: int | None = None  # None: the server's limit


ANONYMOUS = Principal("anonymous", SCOPES)  # every caller, when authentication is off


def new_key() -> str:
    """A fresh API key: 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    """The hex SHA-256 of ``key``: what a key source stores."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyIndex:
    """Credentials to principals: SHA-256 digests of keys, and certificate names."""

    __slots__ = ("_by_digest", "_by_san", "keys", "principals")

    def __init__(
        self, by_digest: Mapping[bytes, Principal], by_san: Mapping[str, Principal]
    ) -> None:
        self._by_digest = {digest: (digest, p) for digest, p in by_digest.items()}
        self._by_san = dict(by_san)
        self.keys = len(self._by_digest)
        self.principals = len({p.name for p in (*by_digest.values(), *by_san.values())})

    def for_key(self, key: str) -> tuple[Principal | None, bytes]:
        """The principal of ``key`` (None if unknown) and the key's digest."""
        digest = hashlib.sha256(key.encode()).digest()
        found = self._by_digest.get(digest)
        if found is None or not hmac.compare_digest(found[0], digest):
            return None, digest
        return found[1], digest

    def for_names(self, names: Iterable[bytes | str]) -> Principal | None:
        """The principal of the first certificate name that has one."""
        for name in names:
            text = name.decode(errors="replace") if isinstance(name, bytes) else name
            found = self._by_san.get(text)
            if found is not None:
                return found
        return None

    @property
    def has_certificates(self) -> bool:
        return bool(self._by_san)


def parse_lines(text: str, source: str) -> KeyIndex:
    """The index of a JSON-lines key source; ``KeySourceError`` naming every bad line."""
    entries: list[tuple[int, Mapping[str, Any]]] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            raw = json.loads(stripped)
        except ValueError:
            problems.append(f"{source}:{number}: not a JSON object")
            continue
        if not isinstance(raw, dict):
            problems.append(f"{source}:{number}: not a JSON object")
            continue
        entries.append((number, raw))
    return build_index(entries, source, problems)


def build_index(
    entries: Iterable[tuple[int, Mapping[str, Any]]], source: str, problems: list[str] | None = None
) -> KeyIndex:
    """The index of ``entries`` (line or row number, fields); ``KeySourceError`` if any is bad."""
    problems = problems if problems is not None else []
    by_digest: dict[bytes, Principal] = {}
    by_san: dict[str, Principal] = {}
    for number, raw in entries:
        where = f"{source}:{number}"
        try:
            credential, principal = _entry(raw)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if isinstance(credential, bytes):
            if credential in by_digest:
                problems.append(f"{where}: a second line for the same key")
            by_digest[credential] = principal
        else:
            if credential in by_san:
                problems.append(f"{where}: a second line for the certificate name {credential!r}")
            by_san[credential] = principal
    if problems:
        raise KeySourceError("; ".join(problems))
    return KeyIndex(by_digest, by_san)


def _entry(raw: Mapping[str, Any]) -> tuple[bytes | str, Principal]:
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {unknown} (store a key's sha256, never the key)")
    name = raw.get("principal")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError("principal must be 1-128 characters of A-Z a-z 0-9 . _ : @ / + -")
    digest, san = raw.get("sha256"), raw.get("san")
    if (digest is None) == (san is None):
        raise ValueError("give exactly one of sha256 (an API key) and san (a certificate)")
    credential: bytes | str
    if digest is not None:
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        credential = bytes.fromhex(digest)
    else:
        if not isinstance(san, str) or not san or not san.isprintable():
            raise ValueError("san must be a certificate's subject alternative name")
        credential = san
    scopes = raw.get("scopes")
    if not isinstance(scopes, list) or not scopes:
        raise ValueError("scopes must be a non-empty list")
    bad = [s for s in scopes if s not in SCOPES]
    if bad:
        raise ValueError(f"unknown scopes {bad}; known: {sorted(SCOPES)}")
    principal = Principal(
        name,
        frozenset(scopes),
        parse_expiry(raw.get("expires")),
        _rates(raw.get("rate_limits")),
        _max_streams(raw.get("max_streams")),
    )
    return credential, principal


def parse_expiry(value: Any) -> float | None:
    """Unix time of an ``expires`` value (None: never)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            if len(value) == 10:
                day = date.fromisoformat(value)
                return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if moment.tzinfo is not None:
                return moment.timestamp()
    raise ValueError("expires must be an ISO 8601 date, or a time with its UTC offset")


def _rates(value: Any) -> dict[str, Rate | None]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str | int) for v in value.values()):
        raise ValueError('rate_limits must map scopes to "per_second[/burst]"')
    bad = [scope for scope in value if scope not in SCOPES]
    if bad:
        raise ValueError(f"rate_limits names unknown scopes {bad}")
    return {scope: parse_rate(str(rate)) for scope, rate in value.items()}


def _max_streams(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("max_streams must be an integer >= 0 (0: unlimited)")
    return value


def entry_line(principal: str, digest: str, scopes: Iterable[str], expires: str = "") -> str:
    """The JSON line of a new key, as ``huleedu keys new`` prints it."""
    entry: dict[str, Any] = {"principal": principal, "sha256": digest, "scopes": list(scopes)}
    if expires:
        entry["expires"] = expires
    line = json.dumps(entry)
    parse_lines(line, "new key")  # the same rules as a server's
    return line
