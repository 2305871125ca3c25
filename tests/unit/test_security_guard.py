"""The guard: identity from a key or a certificate, then the scope, then the rate."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest

from mesh.errors import PermissionDenied, RateLimited, Unauthenticated
from mesh.security.guard import Guard
from mesh.security.keys import ANONYMOUS, KeyIndex, key_digest, new_key, parse_lines
from mesh.security.limits import Rate

READER, EXPIRED = new_key(), new_key()


@dataclass
class Keys:
    index: KeyIndex


@dataclass
class Context:
    names: list[bytes] | None = None

    def peer_identities(self) -> list[bytes] | None:
        return self.names


def _keys() -> Keys:
    lines = [
        {"principal": "reader", "sha256": key_digest(READER), "scopes": ["batches:read"]},
        {
            "principal": "old",
            "sha256": key_digest(EXPIRED),
            "scopes": ["batches:read"],
            "expires": "2001-01-01",
        },
        {"principal": "svc", "san": "svc.test", "scopes": ["batches:register"]},
    ]
    return Keys(parse_lines("\n".join(json.dumps(x) for x in lines), "keys"))


def test_without_keys_everyone_is_anonymous_and_unlimited() -> None:
    guard = Guard(None, {"batches:read": Rate(1, 1)}, max_streams=1)
    assert not guard.enabled
    for _ in range(10):
        principal = guard.admit(None, Context(), "batches:write", "m")
        assert principal is ANONYMOUS
        guard.open_stream(principal)


def test_a_bearer_key_names_the_principal() -> None:
    guard = Guard(_keys())
    assert guard.admit(f"Bearer {READER}", Context(), "batches:read", "m").name == "reader"
    assert guard.admit(f"bearer  {READER} ", Context(), "batches:read", "m").name == "reader"


@pytest.mark.parametrize(
    ("authorization", "names", "audit"),
    [
        (None, None, "no credentials"),
        ("", None, "not 'Bearer <key>'"),
        (READER, None, "not 'Bearer <key>'"),
        ("Basic dXNlcjpwdw==", None, "not 'Bearer <key>'"),
        ("Bearer ", None, "not 'Bearer <key>'"),
        ("Bearer hk_unknown", None, "unknown API key (sha256 "),
        (f"Bearer {EXPIRED}", None, "expired credentials"),
        ("Bearer hk_unknown", [b"svc.test"], "unknown API key"),  # a bad key is never excused
        (None, [b"stranger.test"], "certificate names no principal"),
    ],
)
def test_no_or_bad_credentials_are_unauthenticated(
    authorization: str | None, names: list[bytes] | None, audit: str
) -> None:
    with pytest.raises(Unauthenticated) as raised:
        Guard(_keys()).admit(authorization, Context(names), "batches:read", "m")
    assert audit in raised.value.audit
    assert "hk_unknown" not in raised.value.audit + str(raised.value)
    assert READER not in raised.value.audit + str(raised.value)


def test_a_client_certificate_names_the_principal_when_no_key_is_sent() -> None:
    principal = Guard(_keys()).admit(None, Context([b"svc.test"]), "batches:register", "m")
    assert principal.name == "svc"


def test_a_principal_without_the_scope_is_denied_naming_it() -> None:
    with pytest.raises(PermissionDenied) as raised:
        Guard(_keys()).admit(f"Bearer {READER}", Context(), "batches:write", "Svc/CreateBatch")
    assert (raised.value.principal, raised.value.scope) == ("reader", "batches:write")
    assert raised.value.method == "Svc/CreateBatch"


def test_expiry_is_checked_on_every_call() -> None:
    now = [time.time()]
    keys = _keys()
    guard = Guard(keys, wall_clock=lambda: now[0])
    principal = keys.index.for_key(EXPIRED)[0]
    assert principal is not None
    assert principal.expires_at is not None
    now[0] = principal.expires_at - 1
    guard.admit(f"Bearer {EXPIRED}", Context(), "batches:read", "m")
    now[0] = principal.expires_at
    with pytest.raises(Unauthenticated):
        guard.admit(f"Bearer {EXPIRED}", Context(), "batches:read", "m")


def test_the_rate_is_checked_after_identity_and_scope() -> None:
    guard = Guard(_keys(), {"batches:read": Rate(1, 2)})
    guard.admit(f"Bearer {READER}", Context(), "batches:read", "m")
    guard.admit(f"Bearer {READER}", Context(), "batches:read", "m")
    with pytest.raises(RateLimited):
        guard.admit(f"Bearer {READER}", Context(), "batches:read", "m")
    with pytest.raises(PermissionDenied):  # refused for its scope, not its rate
        guard.admit(f"Bearer {READER}", Context(), "batches:write", "m")
