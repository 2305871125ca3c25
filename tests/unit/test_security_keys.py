"""Key sources: one credential per JSON line, kept as SHA-256, every bad line named."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from mesh.security.keys import (
    KEY_PREFIX,
    KeySourceError,
    entry_line,
    key_digest,
    new_key,
    parse_lines,
)


def line(**fields: object) -> str:
    return json.dumps(fields)


def test_a_key_names_its_principal_and_an_unknown_key_names_none() -> None:
    key, other = new_key(), new_key()
    index = parse_lines(
        "# operators\n\n"
        + line(principal="ops", sha256=key_digest(key), scopes=["batches:read"])
        + "\n",
        "keys.jsonl",
    )
    principal, digest = index.for_key(key)
    assert principal is not None
    assert (principal.name, principal.scopes) == ("ops", frozenset({"batches:read"}))
    assert digest.hex() == key_digest(key)
    assert index.for_key(other)[0] is None
    assert (index.keys, index.principals) == (1, 1)


def test_new_keys_are_long_random_and_recognizable() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(k.startswith(KEY_PREFIX) and len(k) == len(KEY_PREFIX) + 43 for k in keys)


def test_certificate_names_map_to_principals() -> None:
    index = parse_lines(
        line(principal="batch-service", san="batch.huleedu.test", scopes=["batches:register"]),
        "keys.jsonl",
    )
    found = index.for_names([b"other.example", b"batch.huleedu.test"])
    assert found is not None
    assert found.name == "batch-service"
    assert index.for_names([b"other.example"]) is None
    assert index.has_certificates


def test_expiry_limits_and_overrides_are_parsed() -> None:
    a, b = new_key(), new_key()
    index = parse_lines(
        "\n".join(
            [
                line(
                    principal="a",
                    sha256=key_digest(a),
                    scopes=["batches:read"],
                    expires="2030-01-02",
                    rate_limits={"batches:read": "5/10"},
                    max_streams=3,
                ),
                line(
                    principal="b",
                    sha256=key_digest(b),
                    scopes=["batches:read"],
                    expires="2030-01-02T03:04:05+02:00",
                ),
            ]
        ),
        "keys.jsonl",
    )
    first, second = index.for_key(a)[0], index.for_key(b)[0]
    assert first is not None
    assert second is not None
    assert first.expires_at == datetime(2030, 1, 2, tzinfo=UTC).timestamp()
    assert second.expires_at == datetime(2030, 1, 2, 1, 4, 5, tzinfo=UTC).timestamp()
    assert str(first.rates["batches:read"]) == "5/s, burst 10"
    assert first.max_streams == 3


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ("not json", "not a JSON object"),
        ("[1, 2]", "not a JSON object"),
        (line(principal="a", key="hk_secret", scopes=["batches:read"]), "never the key"),
        (line(principal="a b", sha256="a" * 64, scopes=["batches:read"]), "principal"),
        (line(principal="a", scopes=["batches:read"]), "exactly one"),
        (line(principal="a", sha256="a" * 64, san="x", scopes=["batches:read"]), "exactly one"),
        (line(principal="a", sha256="A" * 64, scopes=["batches:read"]), "64 lowercase hex"),
        (line(principal="a", sha256="a" * 64, scopes=[]), "non-empty list"),
        (line(principal="a", sha256="a" * 64, scopes=["root"]), "unknown scopes ['root']"),
        (line(principal="a", sha256="a" * 64, scopes=["batches:read"], expires="soon"), "ISO"),
        (
            line(
                principal="a", sha256="a" * 64, scopes=["batches:read"], expires="2030-01-02T00:00"
            ),
            "UTC offset",
        ),
        (
            line(principal="a", sha256="a" * 64, scopes=["batches:read"], max_streams=-1),
            "max_streams",
        ),
        (
            line(principal="a", sha256="a" * 64, scopes=["batches:read"], rate_limits={"x": "1"}),
            "unknown scopes",
        ),
    ],
)
def test_each_bad_line_is_named_without_its_content(entry: str, complaint: str) -> None:
    good = line(principal="ok", sha256="c" * 64, scopes=["batches:read"])
    with pytest.raises(KeySourceError) as raised:
        parse_lines(f"{good}\n{entry}\n", "keys.jsonl")
    message = str(raised.value)
    assert message.startswith("keys.jsonl:2: ")
    assert complaint in message
    assert "hk_secret" not in message


def test_the_same_key_twice_is_refused() -> None:
    entry = line(principal="a", sha256="a" * 64, scopes=["batches:read"])
    with pytest.raises(KeySourceError, match=r"keys\.jsonl:2: a second line for the same key"):
        parse_lines(f"{entry}\n{entry}", "keys.jsonl")


def test_the_printed_line_of_a_new_key_is_a_valid_key_source() -> None:
    key = new_key()
    printed = entry_line("worker-1", key_digest(key), ["outcomes:record"], "2030-01-01")
    principal, _ = parse_lines(printed, "x").for_key(key)
    assert principal is not None
    assert principal.name == "worker-1"
    assert key not in printed
