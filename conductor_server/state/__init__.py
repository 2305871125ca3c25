"""Pipeline state of the conductor: batches, per-essay step outcomes, step counts.

``StateStore`` is the seam; ``MemoryStateStore`` (embedded mode), ``RedisStateStore``,
``PostgresStateStore`` and ``ComposedStateStore`` (PostgreSQL then Redis, the real mode)
implement it with the same semantics. Errors: ``conductor_server.state.errors``.
"""

from conductor_server.state.composed import ComposedStateStore
from conductor_server.state.errors import (
    ConflictingOutcome,
    EssayNotExpected,
    InvalidRegistration,
    PermanentStateError,
    RegistrationConflict,
    StateBackendUnavailable,
    StateError,
    UnknownBatch,
    UnknownStep,
)
from conductor_server.state.memory import MemoryStateStore
from conductor_server.state.postgres_store import (
    MIGRATION_SOURCES,
    PostgresStateStore,
    completion_event_id,
)
from conductor_server.state.protocol import BatchState, RecordResult, StateStore
from conductor_server.state.redis_store import DEFAULT_TTL, RedisStateStore

__all__ = [
    "DEFAULT_TTL",
    "MIGRATION_SOURCES",
    "BatchState",
    "ComposedStateStore",
    "ConflictingOutcome",
    "EssayNotExpected",
    "InvalidRegistration",
    "MemoryStateStore",
    "PermanentStateError",
    "PostgresStateStore",
    "RecordResult",
    "RedisStateStore",
    "RegistrationConflict",
    "StateBackendUnavailable",
    "StateError",
    "StateStore",
    "UnknownBatch",
    "UnknownStep",
    "completion_event_id",
]
