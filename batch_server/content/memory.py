"""Essay texts in a dict: the embedded mode's content store."""

from __future__ import annotations

from collections.abc import Sequence

from batch_server.domain.errors import ContentNotFound
from batch_server.domain.identity import new_id


class MemoryContentStore:
    """A ``ContentStore`` that forgets everything when the process ends."""

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}

    async def put_many(self, texts: Sequence[str]) -> list[str]:
        ids = [new_id() for _ in texts]
        self._texts.update(zip(ids, texts, strict=True))
        return ids

    async def get(self, storage_id: str) -> str:
        try:
            return self._texts[storage_id]
        except KeyError:
            raise ContentNotFound(storage_id) from None

    def __len__(self) -> int:
        return len(self._texts)
