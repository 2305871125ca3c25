"""``AsyncResource``: what every owner of a resource is (STYLE 10), written once.

``async with`` one calls ``start()`` on the way in and ``close()`` on the way out. Subclasses
implement ``close()`` (idempotent: it may run again from an exit stack); those with start-up work
(connecting, subscribing) override ``start()``, which does nothing by default.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self


class AsyncResource(ABC):
    __slots__ = ()

    async def start(self) -> None:  # noqa: B027  (optional hook: most resources need none)
        """Acquire what the resource needs before use; nothing by default."""

    @abstractmethod
    async def close(self) -> None:
        """Release what the resource holds; idempotent."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
