"""``Kept``: values by batch with their stamps, bounded by essays, least recently kept first out."""

from __future__ import annotations

from dataclasses import dataclass

from mesh.postgres.kept import Kept


@dataclass
class Batch:
    essay_count: int


def test_a_value_is_answered_only_for_the_stamp_it_was_kept_with() -> None:
    kept: Kept[Batch] = Kept(100)
    value = Batch(10)
    kept.keep("b1", 7, value)
    assert kept.take("b1", 8) is None  # another writer stamped it since
    assert kept.take("b1", 7) is None  # a take removes it, answered or not
    kept.keep("b1", 9, value)
    assert kept.take("b1", 9) is value
    assert len(kept) == 0
    assert kept.essays == 0


def test_a_later_stamp_kept_already_stays() -> None:
    kept: Kept[Batch] = Kept(100)
    newer, older = Batch(10), Batch(10)
    kept.keep("b1", 9, newer)
    kept.keep("b1", 8, older)
    assert kept.take("b1", 9) is newer
    assert kept.essays == 0


def test_the_least_recently_kept_go_first_beyond_the_capacity() -> None:
    kept: Kept[Batch] = Kept(25)
    a, b, c = Batch(10), Batch(10), Batch(10)
    kept.keep("a", 1, a)
    kept.keep("b", 2, b)
    kept.keep("a", 3, a)  # kept again: now the most recent
    kept.keep("c", 4, c)  # 30 essays: "b" goes
    assert kept.essays == 20
    assert len(kept) == 2
    assert kept.take("b", 2) is None
    assert kept.take("a", 3) is a
    assert kept.take("c", 4) is c


def test_a_value_larger_than_the_capacity_and_capacity_zero_keep_nothing() -> None:
    kept: Kept[Batch] = Kept(10)
    kept.keep("big", 1, Batch(11))
    assert len(kept) == 0
    assert kept.take("big", 1) is None
    nothing: Kept[Batch] = Kept(0)
    nothing.keep("b1", 1, Batch(1))
    assert len(nothing) == 0
    assert nothing.essays == 0
