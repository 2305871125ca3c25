"""Listing batches a page at a time: page sizes and the opaque page token.

Batches are listed newest first by the key ``(created_at, batch_id)``; a token is the key of the
last batch of a page, so the next page starts strictly after it (keyset pagination: stable while
batches are being created, and one index range scan per page). The token is URL-safe base64 of a
small versioned JSON document; clients must treat it as opaque.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_VERSION = 1


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where a page ends: list batches strictly older than (``created_at``, ``batch_id``)."""

    created_at: datetime
    batch_id: str


class InvalidPageToken(ValueError):
    """The token was not produced by this service."""


def page_size(requested: int, default: int = DEFAULT_PAGE_SIZE, most: int = MAX_PAGE_SIZE) -> int:
    """The page size for a request: 0 means ``default``; otherwise 1..``most`` (the defaults
    are the listing of batches')."""
    if requested == 0:
        return default
    if not 1 <= requested <= most:
        raise ValueError(f"must be between 1 and {most:,} (or 0 for {default})")
    return requested


def encode_token(cursor: PageCursor) -> str:
    document = [_VERSION, cursor.created_at.isoformat(), cursor.batch_id]
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> PageCursor:
    """The cursor of ``token``; ``InvalidPageToken`` when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, created_at, batch_id = json.loads(raw)
        when = datetime.fromisoformat(created_at)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidPageToken("not a page token of this service") from exc
    if version != _VERSION or not isinstance(batch_id, str) or when.tzinfo is None:
        raise InvalidPageToken("not a page token of this service")
    return PageCursor(when, batch_id)
