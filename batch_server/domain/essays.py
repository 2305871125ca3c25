"""Reading essays: what an essay read returns, and how a batch's essays are paged.

A batch's essays are listed in batch order by their position; a page token is the batch and the
position of the last essay of a page, so the next page starts strictly after it (one range scan
of the primary key per page). A token names its batch: the next page of another batch would be
the wrong essays, so such a token is refused. Like ListBatches' tokens, it is URL-safe base64 of
a small versioned JSON document; clients must treat it as opaque.

With ``EssayView.FULL`` a page also ends before the texts in it pass ``PAGE_TEXT_BYTES`` (it
always has at least one essay): a response stays well within the message size limit whatever
the page size.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from batch_server.domain.model import Essay
from batch_server.domain.paging import InvalidPageToken

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1_000
PAGE_TEXT_BYTES = 2 * 1024 * 1024  # UTF-8 bytes of the texts of one page of FULL essays
_KIND = "essays"
_VERSION = 1


class EssayView(StrEnum):
    """How much of an essay a read returns."""

    BASIC = "basic"  # ids, storage ids and step results
    FULL = "full"  # and the original and latest texts


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class EssayStepResult:
    """One step's result for one essay, as the conductor counted it; ``outcome`` is None while
    the essay waits for an outcome of a new attempt."""

    step: str
    outcome: Outcome | None
    error_code: str = ""
    error_message: str = ""
    output_storage_id: str = ""
    attempt: int = 1
    run_id: str = ""


@dataclass(frozen=True, slots=True)
class SpellcheckEssay:
    """An essay of TriggerSpellcheck: one text, no batch."""

    essay_id: str
    storage_id: str
    language: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredEssay:
    """An essay as the batch store holds it: its batch ("" for an essay of TriggerSpellcheck)
    and its position there (0 for an essay of TriggerSpellcheck)."""

    batch_id: str
    position: int
    essay: Essay


@dataclass(frozen=True, slots=True)
class EssayTexts:
    original: str
    current: str

    @property
    def size(self) -> int:
        """UTF-8 bytes of both texts: what they add to a response."""
        return len(self.original.encode()) + len(self.current.encode())


@dataclass(frozen=True, slots=True)
class EssayDetail:
    """An essay with its step results (in definition order) and, in the FULL view, its texts."""

    batch_id: str
    essay: Essay
    steps: tuple[EssayStepResult, ...]
    texts: EssayTexts | None = None


@dataclass(frozen=True, slots=True)
class EssayCursor:
    """Where a page of a batch's essays ends: list those after ``position``."""

    batch_id: str
    position: int


def encode_token(cursor: EssayCursor) -> str:
    document = [_KIND, _VERSION, cursor.batch_id, cursor.position]
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, batch_id: str) -> EssayCursor:
    """The cursor of ``token``; ``InvalidPageToken`` when it is not one of ours, or was issued
    for another batch than ``batch_id``."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        kind, version, issued_for, position = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidPageToken("not a page token of this service") from exc
    if (
        (kind, version) != (_KIND, _VERSION)
        or not isinstance(issued_for, str)
        or type(position) is not int
        or position < 0
    ):
        raise InvalidPageToken("not a page token of this service")
    if issued_for != batch_id:
        raise InvalidPageToken("issued for another batch: list its essays from the first page")
    return EssayCursor(issued_for, position)
