"""What a store keeps of the batches it wrote last: one value per batch, least recently kept
evicted first once the values together hold more than ``capacity`` essays. The conductor keeps
tallies (``conductor_server.store.postgres``), the BatchService the progress of runs
(``batch_server.store.postgres``).

Each value is kept with the stamp the store wrote with it. ``take`` removes the batch's value and
answers it only when the stamp given (the one the batch has now) is the kept one: a value taken
is the caller's to change, and kept again, with its new stamp, once its write is committed.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, Protocol, TypeVar

KEPT_ESSAYS = 20_000  # the default capacity, in essays


class HoldsEssays(Protocol):
    @property
    def essay_count(self) -> int: ...


T = TypeVar("T", bound=HoldsEssays)


class Kept(Generic[T]):
    """At most ``capacity`` essays' worth of values, by batch id (0: keep nothing)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._values: OrderedDict[str, tuple[int, T]] = OrderedDict()
        self.essays = 0

    def __len__(self) -> int:
        return len(self._values)

    def take(self, batch_id: str, stamp: int) -> T | None:
        """Remove the value of ``batch_id``; answer it if it was kept with ``stamp``."""
        kept = self._values.pop(batch_id, None)
        if kept is None:
            return None
        self.essays -= kept[1].essay_count
        return kept[1] if kept[0] == stamp else None

    def keep(self, batch_id: str, stamp: int, value: T) -> None:
        """Keep ``value`` with ``stamp`` (a later stamp kept already stays)."""
        if value.essay_count > self.capacity:
            return
        held = self._values.pop(batch_id, None)
        if held is not None:
            self.essays -= held[1].essay_count
            if held[0] > stamp:
                value, stamp = held[1], held[0]
        self._values[batch_id] = (stamp, value)
        self.essays += value.essay_count
        while self.essays > self.capacity:
            _, (_, evicted) = self._values.popitem(last=False)
            self.essays -= evicted.essay_count
