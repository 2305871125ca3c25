"""Token buckets per (principal, scope), open streams per principal, and their notation."""

from __future__ import annotations

import pytest

from mesh.errors import RateLimited, StreamLimited
from mesh.security.keys import SCOPES
from mesh.security.limits import Rate, RateLimiter, StreamCounter, parse_rate, parse_rates


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rates_are_written_per_second_with_an_optional_burst() -> None:
    assert parse_rate("50") == Rate(50, 50)
    assert parse_rate("50/100") == Rate(50, 100)
    assert parse_rate("0.5") == Rate(0.5, 1)
    assert parse_rate("0") is None
    for bad in ("x", "-1", "5/0", "inf", "nan"):
        with pytest.raises(ValueError, match=r"rate|burst|float"):
            parse_rate(bad)
    assert parse_rates("batches:read=5/10, batches:write=0", SCOPES) == {
        "batches:read": Rate(5, 10),
        "batches:write": None,
    }
    with pytest.raises(ValueError, match="scope=rate"):
        parse_rates("root=5", SCOPES)


def test_a_bucket_allows_its_burst_then_says_when_to_retry() -> None:
    clock = Clock()
    limiter = RateLimiter({"batches:read": Rate(2, 3)}, clock)
    owner = object()
    for _ in range(3):
        limiter.check("ops", {}, owner, "batches:read")
    with pytest.raises(RateLimited) as raised:
        limiter.check("ops", {}, owner, "batches:read")
    assert raised.value.retry_after == pytest.approx(0.5)
    assert raised.value.scope == "batches:read"
    clock.now += 0.5
    limiter.check("ops", {}, owner, "batches:read")  # refilled one token


def test_buckets_are_per_principal_and_per_scope() -> None:
    clock = Clock()
    limiter = RateLimiter({"batches:read": Rate(1, 1), "batches:write": Rate(1, 1)}, clock)
    limiter.check("a", {}, "a", "batches:read")
    limiter.check("b", {}, "b", "batches:read")  # another principal: its own bucket
    limiter.check("a", {}, "a", "batches:write")  # another scope: its own bucket
    with pytest.raises(RateLimited):
        limiter.check("a", {}, "a", "batches:read")


def test_a_principal_override_or_an_unlimited_scope_applies() -> None:
    clock = Clock()
    limiter = RateLimiter({"batches:read": Rate(1, 1)}, clock)
    for _ in range(1000):
        limiter.check("svc", {"batches:read": None}, "svc", "batches:read")
        limiter.check("svc", {}, "svc", "pipelines:read")  # no rate configured: unlimited


def test_a_reloaded_principal_gets_a_fresh_bucket_with_its_new_rate() -> None:
    clock = Clock()
    limiter = RateLimiter({}, clock)
    limiter.check("ops", {"batches:read": Rate(1, 1)}, "v1", "batches:read")
    with pytest.raises(RateLimited):
        limiter.check("ops", {"batches:read": Rate(1, 1)}, "v1", "batches:read")
    limiter.check("ops", {"batches:read": Rate(100, 100)}, "v2", "batches:read")


def test_streams_are_counted_per_principal_up_to_the_limit() -> None:
    streams = StreamCounter(2)
    streams.open("a", None)
    streams.open("a", None)
    streams.open("b", None)
    with pytest.raises(StreamLimited) as raised:
        streams.open("a", None)
    assert raised.value.limit == 2
    assert raised.value.retry_after > 0
    streams.close("a")
    streams.open("a", None)
    streams.open("a", 5)  # the principal's own limit wins
    assert streams.count("a") == 3
    unlimited = StreamCounter(0)
    for _ in range(500):
        unlimited.open("a", None)
