from collections.abc import Callable, Collection, Iterable, Sequence
from typing import final

from generated.huleedu.events.v1.events_pb2 import EventEnvelope
from mesh.bus import Record

@final
class Message:
    """A consumed record with its decoded, validated envelope (read-only)."""

    def __init__(self, record: Record, envelope: EventEnvelope) -> None: ...
    @property
    def record(self) -> Record: ...
    @property
    def envelope(self) -> EventEnvelope: ...
    @property
    def event_id(self) -> str: ...

@final
class Decoder:
    """Parses and checks one poll's records; see mesh/_fastdecode.c."""

    def __init__(
        self,
        parse: Callable[[bytes], EventEnvelope],
        parse_framed: Callable[[bytes], Sequence[EventEnvelope]],
        id_field: int,
        type_field: int,
        payloads: dict[int, bytes],
        accept: Collection[int] | None,
    ) -> None: ...
    def __call__(
        self, batches: Iterable[Sequence[Record]], /
    ) -> tuple[list[Message | Record], int]: ...
