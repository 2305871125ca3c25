"""Fair use: per-principal token buckets per scope, and per-principal open-stream counts.

A ``Rate`` is written ``per_second[/burst]`` (``"50/100"``: 50 calls a second on average, 100 at
once after a quiet spell; the burst defaults to the rate, at least 1); ``0`` is unlimited. The
server's ``RATE_LIMITS`` gives each scope its rate (``scope=rate,...``); a principal's entry in
the key source may override any of them. Each (principal, scope) has its own bucket: one client
cannot spend another's calls, and a principal's reads cannot spend its writes.

Both counters are touched only from the event loop's thread (every RPC of a ``grpc.aio`` server
runs there), so they need no lock; a bucket is a few float operations per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mesh.errors import RateLimited, StreamLimited

STREAM_RETRY_SECONDS = 1.0  # what RetryInfo suggests to a principal at its stream limit


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: float

    def __str__(self) -> str:
        return f"{self.per_second:g}/s, burst {self.burst:g}"


def parse_rate(text: str) -> Rate | None:
    """``"50"`` or ``"50/100"``; ``"0"`` (unlimited) is None. ``ValueError`` otherwise."""
    rate, _, burst = text.strip().partition("/")
    per_second = float(rate)
    if per_second < 0 or per_second != per_second or per_second == float("inf"):
        raise ValueError(f"rate {text!r} must be a finite number >= 0")
    if per_second == 0:
        return None
    size = float(burst) if burst else max(1.0, per_second)
    if not 1 <= size < float("inf"):
        raise ValueError(f"burst of {text!r} must be at least 1")
    return Rate(per_second, size)


def parse_rates(spec: str, scopes: frozenset[str]) -> dict[str, Rate | None]:
    """``"scope=rate[/burst],..."``; every scope must be one of ``scopes``."""
    rates: dict[str, Rate | None] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        scope, sep, rate = item.partition("=")
        if not sep or scope.strip() not in scopes:
            raise ValueError(f"{item!r} is not scope=rate[/burst] with a scope of {sorted(scopes)}")
        rates[scope.strip()] = parse_rate(rate)
    return rates


class Bucket:
    """A token bucket: ``burst`` tokens at most, refilled at ``per_second``."""

    __slots__ = ("owner", "rate", "tokens", "updated")

    def __init__(self, owner: object, rate: Rate | None, now: float) -> None:
        self.owner = owner  # the principal it was made for: a reloaded principal gets a new one
        self.rate = rate
        self.tokens = rate.burst if rate is not None else 0.0
        self.updated = now

    def take(self, now: float) -> float:
        """Spend a token: 0.0, or the seconds until one is there (nothing is spent)."""
        rate = self.rate
        if rate is None:
            return 0.0
        tokens = min(rate.burst, self.tokens + (now - self.updated) * rate.per_second)
        self.updated = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / rate.per_second


class RateLimiter:
    """One bucket per (principal, scope); ``check`` raises ``RateLimited`` past the rate."""

    def __init__(
        self, defaults: Mapping[str, Rate | None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._defaults = dict(defaults)
        self._clock = clock
        self._buckets: dict[tuple[str, str], Bucket] = {}

    def check(self, name: str, rates: Mapping[str, Rate | None], owner: object, scope: str) -> None:
        """Spend one call of ``scope`` for the principal ``name`` (its own ``rates`` override
        the defaults; ``owner`` is the principal object, so a reload starts a fresh bucket)."""
        key = (name, scope)
        bucket = self._buckets.get(key)
        now = self._clock()
        if bucket is None or bucket.owner is not owner:
            rate = rates[scope] if scope in rates else self._defaults.get(scope)
            bucket = self._buckets[key] = Bucket(owner, rate, now)
        wait = bucket.take(now)
        if wait:
            raise RateLimited(name, scope, str(bucket.rate), wait)


class StreamCounter:
    """Open server streams per principal; ``open`` raises ``StreamLimited`` at the limit."""

    def __init__(self, default_limit: int) -> None:
        self._default = default_limit  # 0: unlimited
        self._open: dict[str, int] = {}

    def open(self, name: str, limit: int | None) -> None:
        """Count a new stream of ``name`` (``limit``: its own, else the default)."""
        cap = self._default if limit is None else limit
        count = self._open.get(name, 0)
        if cap and count >= cap:
            raise StreamLimited(name, cap, STREAM_RETRY_SECONDS)
        self._open[name] = count + 1

    def close(self, name: str) -> None:
        count = self._open.get(name, 0) - 1
        if count > 0:
            self._open[name] = count
        else:
            self._open.pop(name, None)

    def count(self, name: str) -> int:
        return self._open.get(name, 0)
