"""The retry / dead-letter decision: one pure function over the error and the attempt count.

Classification (``is_retriable``), in order:

1. Errors raised by a client library of a backend (``aiokafka``, ``asyncpg``, ``redis``,
   ``grpc``) are infrastructure trouble: transient, whatever flags they carry. (aiokafka marks
   ``KafkaTimeoutError`` ``retriable = False``; a broker outage must still never reach the DLQ.)
2. An error whose type (or instance) has a boolean ``retriable`` attribute is taken at its word.
   Decode and validation errors (``envelope.EnvelopeError``) and domain errors such as an
   unknown batch or step set ``retriable = False``: permanent.
3. Everything else is transient. Unknown exceptions are retried, never dead-lettered: a bug or
   an outage stalls one partition visibly (retry metrics, logs) instead of moving good records
   aside. Domain code declares what is permanent.

Permanent errors go to the DLQ at once. Transient errors are retried forever (DESIGN §6: never
DLQ'd) with exponential backoff, capped, with jitter.

Errors (for handlers that have no hierarchy of their own)::

    PermanentError   retriable = False   the record can never be processed: dead-letter it
    TransientError   retriable = True    try again later
"""

from __future__ import annotations

from dataclasses import dataclass

_INFRASTRUCTURE_MODULES = ("aiokafka", "asyncpg", "redis", "grpc")


class PermanentError(Exception):
    """Processing this record can never succeed (an unknown batch, a payload out of range)."""

    retriable = False


class TransientError(Exception):
    """Processing failed for a reason that may pass (a backend is down)."""

    retriable = True


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: ``initial * multiplier**(attempt-1)``, capped, scaled by jitter.

    The jitter factor is ``1 - jitter * draw`` with ``draw`` uniform in [0, 1), so a delay lies in
    ``((1 - jitter) * ceiling, ceiling]`` and its expectation never decreases with the attempt.
    """

    initial: float = 0.1
    multiplier: float = 2.0
    cap: float = 30.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.cap and self.multiplier >= 1 and 0 <= self.jitter < 1):
            raise ValueError(f"invalid backoff {self}")

    def ceiling(self, attempt: int) -> float:
        """The delay before jitter for the ``attempt``-th failure (1-based)."""
        try:
            raw = self.initial * self.multiplier ** max(attempt - 1, 0)
        except OverflowError:
            return self.cap
        return min(raw, self.cap)


@dataclass(frozen=True, slots=True)
class Retry:
    """Try the record again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Give up on the record: publish it to the dead-letter topic."""


Decision = Retry | DeadLetter

DEFAULT_BACKOFF = Backoff()


def is_retriable(error: BaseException) -> bool:
    """Whether ``error`` is transient (see the module docstring for the rules)."""
    module = type(error).__module__
    if module.split(".", 1)[0] in _INFRASTRUCTURE_MODULES:
        return True
    flag = getattr(error, "retriable", None)
    if isinstance(flag, bool):
        return flag
    return True


def decide(
    error: BaseException, attempt: int, backoff: Backoff = DEFAULT_BACKOFF, *, draw: float = 0.0
) -> Decision:
    """What to do after the ``attempt``-th failure (1-based) of a record with ``error``.

    ``draw`` is a uniform random number in [0, 1) supplied by the caller (keeps this pure).
    """
    if not is_retriable(error):
        return DeadLetter()
    return Retry(backoff.ceiling(attempt) * (1.0 - backoff.jitter * draw))
