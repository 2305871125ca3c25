"""Generated correlation ids are canonical random UUIDs."""

from __future__ import annotations

import uuid

from mesh import correlation


def test_new_ids_are_canonical_version_4_uuids() -> None:
    ids = [correlation.new() for _ in range(2000)]
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == value
    assert len(set(ids)) == len(ids)
    # every variant digit occurs (8, 9, a, b): the variant bits come from the random byte
    assert {value[19] for value in ids} == set("89ab")
