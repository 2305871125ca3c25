"""The two forms of a chaos run: ``--short`` (CI) and the full one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    """How much load and how long each fault; every duration in seconds."""

    name: str
    essays: int  # per batch
    batch_interval: float  # a new batch (and run) this often while the load runs
    before: float  # load before the fault (at least one run in flight too)
    after: float  # load after the fault is over
    outage: float  # Kafka or PostgreSQL down
    redis_outage: float  # Redis down
    settle: float  # after the load stops: the mesh must settle within this
    worker_delay: float  # a step command takes the workers this long
    failure_rate: float  # share of essays the workers fail
    duplicate_share: float  # duplicate storm: share of outcomes delivered twice or more
    producers: int  # concurrent producers of outcomes
    drain_seconds: float  # DRAIN_SECONDS of the servers under SIGTERM
    hammer: int  # concurrent callers per server under SIGTERM


SHORT = Profile(
    name="short",
    essays=20,
    batch_interval=0.5,
    before=2.0,
    after=2.0,
    outage=4.0,
    redis_outage=5.0,
    settle=60.0,
    worker_delay=0.1,
    failure_rate=0.01,
    duplicate_share=0.3,
    producers=50,
    drain_seconds=1.0,
    hammer=6,
)

FULL = Profile(
    name="full",
    essays=50,
    batch_interval=0.25,
    before=5.0,
    after=5.0,
    outage=10.0,
    redis_outage=30.0,
    settle=120.0,
    worker_delay=0.1,
    failure_rate=0.01,
    duplicate_share=0.3,
    producers=50,
    drain_seconds=2.0,
    hammer=16,
)
