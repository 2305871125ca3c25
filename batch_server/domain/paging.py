"""Listing batches: filters, page sizes and the opaque page token.

Batches are listed newest first by the key ``(created_at, batch_id)``; a token is the key of the
last batch of a page, so the next page starts strictly after it (keyset pagination: stable while
batches are being created, and one index range scan per page). A token is bound to the filters
it was issued for (``BatchFilter.fingerprint``): the next page of another listing would skip or
repeat batches, so such a token is refused. The token is URL-safe base64 of a small versioned
JSON document; clients must treat it as opaque.

``BatchFilter.matches`` is the one definition of what a filter selects; the memory store applies
it as it is and the PostgreSQL store's query is held to it by a test on random batches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from batch_server.domain.model import BatchSummary, RunStatus

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_VERSION = 2  # 1: tokens of unfiltered listings, issued before filters existed (still accepted)


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where a page ends: list batches strictly older than (``created_at``, ``batch_id``)."""

    created_at: datetime
    batch_id: str


@dataclass(frozen=True, slots=True)
class BatchFilter:
    """Which batches a listing selects; every part must hold, and an empty part selects all.

    ``latest_run_statuses``: the status of the batch's newest run is one of these (``None``: the
    batch has no run). ``labels``: the batch has each of these labels, value equal.
    ``created_after`` (inclusive) and ``created_before`` (exclusive) bound its creation time.
    """

    latest_run_statuses: frozenset[RunStatus | None] = frozenset()
    labels: Mapping[str, str] = field(default_factory=dict)
    created_after: datetime | None = None
    created_before: datetime | None = None

    def matches(self, batch: BatchSummary) -> bool:
        if self.latest_run_statuses and batch.latest_run_status not in self.latest_run_statuses:
            return False
        if any(batch.labels.get(key) != value for key, value in self.labels.items()):
            return False
        if self.created_after is not None and batch.created_at < self.created_after:
            return False
        return self.created_before is None or batch.created_at < self.created_before

    @property
    def fingerprint(self) -> str:
        """A digest of the filter: equal exactly for filters that select the same batches."""
        document = {
            "statuses": sorted(s.value if s is not None else "" for s in self.latest_run_statuses),
            "labels": dict(sorted(self.labels.items())),
            "after": _instant(self.created_after),
            "before": _instant(self.created_before),
        }
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


UNFILTERED = BatchFilter()


def _instant(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


class InvalidPageToken(ValueError):
    """The token was not produced by this service, or for another listing."""


def page_size(requested: int, default: int = DEFAULT_PAGE_SIZE, most: int = MAX_PAGE_SIZE) -> int:
    """The page size for a request: 0 means ``default``; otherwise 1..``most`` (the defaults
    are the listing of batches')."""
    if requested == 0:
        return default
    if not 1 <= requested <= most:
        raise ValueError(f"must be between 1 and {most:,} (or 0 for {default})")
    return requested


def encode_token(cursor: PageCursor, filters: BatchFilter) -> str:
    document = [_VERSION, cursor.created_at.isoformat(), cursor.batch_id, filters.fingerprint]
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, filters: BatchFilter) -> PageCursor:
    """The cursor of ``token``; ``InvalidPageToken`` when it is not one of ours, or was issued
    for other filters than ``filters``."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, created_at, batch_id, *bound = json.loads(raw)
        when = datetime.fromisoformat(created_at)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidPageToken("not a page token of this service") from exc
    if version == 1 and not bound:
        issued_for = UNFILTERED.fingerprint
    elif version == _VERSION and len(bound) == 1:
        [issued_for] = bound
    else:
        raise InvalidPageToken("not a page token of this service")
    if not isinstance(batch_id, str) or when.tzinfo is None:
        raise InvalidPageToken("not a page token of this service")
    if issued_for != filters.fingerprint:
        raise InvalidPageToken("issued for other filters: list again from the first page")
    return PageCursor(when, batch_id)
