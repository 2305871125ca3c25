"""Reading essays (GetEssay, ListEssays): the batch store's records, the conductor's step results
and, in the FULL view, the texts from the content store.

The step results of a page come from one GetEssayOutcomes call for all its essays (at most
1,000), never one per essay. Texts are read a few essays at a time, in order, and reading stops
once the page's texts would pass ``PAGE_TEXT_BYTES``: the page ends before that essay.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from batch_server.conductor import Conductor
from batch_server.domain.errors import EssayNotFound
from batch_server.domain.essays import (
    PAGE_TEXT_BYTES,
    EssayCursor,
    EssayDetail,
    EssayStepResult,
    EssayTexts,
    EssayView,
    StoredEssay,
)
from batch_server.domain.model import Essay
from batch_server.ports import BatchStore, ContentStore

TEXT_READS = 16  # essays whose texts are read at once


@dataclass(frozen=True, slots=True)
class EssayPage:
    essays: tuple[EssayDetail, ...]
    next_cursor: EssayCursor | None


class EssayReader:
    """Essays of batches and of TriggerSpellcheck, with their step results and texts."""

    def __init__(self, store: BatchStore, content: ContentStore, conductor: Conductor) -> None:
        self._store = store
        self._content = content
        self._conductor = conductor

    async def get(self, essay_id: str, batch_id: str, view: EssayView) -> EssayDetail:
        """The essay; ``EssayNotFound`` when there is none, or it is not of ``batch_id`` (when
        given). An essay of TriggerSpellcheck has no batch and no step results."""
        found = await self._store.find_essay(essay_id)
        if found is None or (batch_id and found.batch_id != batch_id):
            raise EssayNotFound(essay_id, batch_id)
        steps: tuple[EssayStepResult, ...] = ()
        if found.batch_id:
            results = await self._conductor.essay_results(found.batch_id, [essay_id])
            steps = results.get(essay_id, ())
        texts = await self._texts(found.essay) if view is EssayView.FULL else None
        return EssayDetail(found.batch_id, found.essay, steps, texts)

    async def page(
        self, batch_id: str, size: int, after: EssayCursor | None, view: EssayView
    ) -> EssayPage:
        """Up to ``size`` of the batch's essays after ``after``, in batch order (fewer in the
        FULL view when their texts would pass the budget); ``BatchNotFound`` if there is no
        such batch."""
        found = await self._store.list_essays(batch_id, size + 1, after.position if after else -1)
        listed = found[:size]
        more = len(found) > size
        texts: Sequence[EssayTexts | None] = [None] * len(listed)
        if view is EssayView.FULL:
            texts = await self._texts_within_budget(listed)
            more = more or len(texts) < len(listed)
            listed = listed[: len(texts)]
        ids = [stored.essay.essay_id for stored in listed]
        results = await self._conductor.essay_results(batch_id, ids) if ids else {}
        essays = tuple(
            EssayDetail(batch_id, stored.essay, results.get(stored.essay.essay_id, ()), read)
            for stored, read in zip(listed, texts, strict=True)
        )
        cursor = EssayCursor(batch_id, listed[-1].position) if more and listed else None
        return EssayPage(essays, cursor)

    async def _texts(self, essay: Essay) -> EssayTexts:
        original = await self._content.get(essay.original_storage_id)
        if essay.current_storage_id == essay.original_storage_id:
            return EssayTexts(original, original)
        return EssayTexts(original, await self._content.get(essay.current_storage_id))

    async def _texts_within_budget(self, essays: Sequence[StoredEssay]) -> list[EssayTexts]:
        """The texts of the leading essays that fit ``PAGE_TEXT_BYTES`` (at least one essay's),
        read ``TEXT_READS`` essays at a time in order; reads past the budget are cancelled."""
        upcoming = iter(essays)
        reading: deque[asyncio.Future[EssayTexts]] = deque()

        def read_next() -> None:
            stored = next(upcoming, None)
            if stored is not None:
                reading.append(asyncio.ensure_future(self._texts(stored.essay)))

        for _ in range(TEXT_READS):
            read_next()
        taken: list[EssayTexts] = []
        used = 0
        try:
            while reading:
                texts = await reading.popleft()
                if taken and used + texts.size > PAGE_TEXT_BYTES:
                    break
                taken.append(texts)
                used += texts.size
                read_next()
        finally:
            for pending in reading:
                pending.cancel()
            await asyncio.gather(*reading, return_exceptions=True)
        return taken
