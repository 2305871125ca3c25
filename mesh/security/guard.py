"""The checks of every RPC: who is calling, may they call this method, may they call it now.

``Guard.admit`` runs in the one RPC wrapper (``mesh.grpc.interceptor``) before the method, with
the method's scope from the server's scope table:

1. **identify**: an ``authorization: Bearer <key>`` metadata entry names a principal by the
   key's SHA-256 (one hash, one dict lookup, ``hmac.compare_digest``); without one, the client
   certificate's names (mutual TLS) do; neither, or an unknown or expired credential, is
   ``Unauthenticated``. A bad key is refused even when a good certificate came with it.
2. **authorize**: the principal must hold the scope, else ``PermissionDenied`` (naming it).
3. **rate**: the (principal, scope) token bucket must have a token, else ``RateLimited``.

Server streams also count against the principal's open-stream limit (``open_stream`` /
``close_stream``). A guard without a key source (authentication off) admits everyone as
``ANONYMOUS`` and limits nothing: with one principal there is nobody to be fair between.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from mesh.errors import PermissionDenied, Unauthenticated
from mesh.security.keys import ANONYMOUS, KeyIndex, Principal
from mesh.security.limits import Rate, RateLimiter, StreamCounter

MISSING = (
    "missing credentials: send an API key as 'authorization: Bearer <key>' metadata "
    "(or connect with a client certificate)"
)
INVALID = "invalid credentials"


class KeySource(Protocol):
    """Where the keys come from (``KeyFile``, ``KeyTable``): ``index`` is the latest version."""

    index: KeyIndex


class Guard:
    """The trust boundary of one server; ``keys`` None means authentication is off."""

    def __init__(
        self,
        keys: KeySource | None,
        rates: Mapping[str, Rate | None] | None = None,
        max_streams: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._limiter = RateLimiter(rates or {}, clock)
        self._streams = StreamCounter(max_streams)
        self._now = wall_clock
        self.enabled = keys is not None

    def admit(self, authorization: str | None, context: Any, scope: str, method: str) -> Principal:
        """The caller's principal if it may call ``method`` (which needs ``scope``) now;
        raises ``Unauthenticated``, ``PermissionDenied`` or ``RateLimited`` otherwise."""
        if self._keys is None:
            return ANONYMOUS
        principal = self._identify(self._keys.index, authorization, context)
        if scope not in principal.scopes:
            raise PermissionDenied(principal.name, scope, method)
        self._limiter.check(principal.name, principal.rates, principal, scope)
        return principal

    def open_stream(self, principal: Principal) -> None:
        """Count a server stream of ``principal``; ``StreamLimited`` at its limit."""
        if self._keys is not None:
            self._streams.open(principal.name, principal.max_streams)

    def close_stream(self, principal: Principal) -> None:
        if self._keys is not None:
            self._streams.close(principal.name)

    def _identify(self, index: KeyIndex, authorization: str | None, context: Any) -> Principal:
        principal: Principal | None
        if authorization is not None:
            scheme, _, key = authorization.partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                raise Unauthenticated(INVALID, audit="authorization is not 'Bearer <key>'")
            principal, digest = index.for_key(key.strip())
            if principal is None:
                audit = f"unknown API key (sha256 {digest.hex()[:12]}...)"
                raise Unauthenticated(INVALID, audit=audit)
        else:
            names = context.peer_identities()
            if not names:
                raise Unauthenticated(MISSING, audit="no credentials")
            principal = index.for_names(names)
            if principal is None:
                shown = [n.decode(errors="replace") for n in names]
                raise Unauthenticated(INVALID, audit=f"certificate names no principal: {shown}")
        if principal.expires_at is not None and principal.expires_at <= self._now():
            raise Unauthenticated(INVALID, principal.name, "expired credentials")
        return principal
