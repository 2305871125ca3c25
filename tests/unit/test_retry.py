"""The retry / dead-letter decision."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.events.envelope import InvalidEnvelope, UndecodableEnvelope
from mesh.events.retry import Backoff, DeadLetter, PermanentError, Retry, TransientError, decide


class UnknownBatch(Exception):
    """A domain error declaring itself permanent, without importing mesh."""

    retriable = False


class KafkaTimeoutError(Exception):
    """Stands in for aiokafka's error of that name, which says retriable = False."""

    retriable = False


KafkaTimeoutError.__module__ = "aiokafka.errors"

TRANSIENT = [
    TransientError("redis down"),
    ConnectionRefusedError(),
    OSError("network"),
    TimeoutError(),
    KeyError("a bug is retried, not dead-lettered"),
    KafkaTimeoutError(),
]
PERMANENT = [
    PermanentError("unknown batch"),
    UnknownBatch("b"),
    UndecodableEnvelope("garbage"),
    InvalidEnvelope("no payload set"),
]

backoffs = st.builds(
    Backoff,
    initial=st.floats(0.001, 5),
    multiplier=st.floats(1, 10),
    cap=st.floats(5, 600),
    jitter=st.floats(0, 0.99),
)
attempts = st.integers(1, 10_000)
draws = st.floats(0, 1, exclude_max=True)


@given(error=st.sampled_from(TRANSIENT), attempt=attempts, backoff=backoffs, draw=draws)
def test_transient_errors_are_retried_forever(
    error: BaseException, attempt: int, backoff: Backoff, draw: float
) -> None:
    decision = decide(error, attempt, backoff, draw=draw)
    assert isinstance(decision, Retry)
    assert 0 < decision.delay <= backoff.cap


@given(error=st.sampled_from(PERMANENT), attempt=attempts, backoff=backoffs, draw=draws)
def test_permanent_errors_are_dead_lettered_at_once(
    error: BaseException, attempt: int, backoff: Backoff, draw: float
) -> None:
    assert isinstance(decide(error, attempt, backoff, draw=draw), DeadLetter)


@given(backoff=backoffs, attempt=attempts, draw=draws)
def test_delays_stay_within_jitter_of_the_capped_ceiling(
    backoff: Backoff, attempt: int, draw: float
) -> None:
    decision = decide(TransientError(), attempt, backoff, draw=draw)
    assert isinstance(decision, Retry)
    ceiling = backoff.ceiling(attempt)
    assert ceiling <= backoff.cap
    assert (1 - backoff.jitter) * ceiling - 1e-9 <= decision.delay <= ceiling + 1e-9


@given(backoff=backoffs, attempt=attempts)
def test_expected_delay_never_decreases(backoff: Backoff, attempt: int) -> None:
    def expected(n: int) -> float:
        # the delay is linear in the draw, so its mean is the delay at the mean draw
        decision = decide(TransientError(), n, backoff, draw=0.5)
        assert isinstance(decision, Retry)
        return decision.delay

    assert expected(attempt) <= expected(attempt + 1) + 1e-9


def test_backoff_grows_then_caps() -> None:
    backoff = Backoff(initial=0.1, multiplier=2, cap=1.0, jitter=0)
    delays = [decide(TransientError(), n, backoff).delay for n in range(1, 7)]  # type: ignore[union-attr]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


@pytest.mark.parametrize(
    "kwargs", [{"initial": 0}, {"multiplier": 0.5}, {"jitter": 1.0}, {"initial": 5, "cap": 1}]
)
def test_nonsense_backoff_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="invalid backoff"):
        Backoff(**kwargs)
