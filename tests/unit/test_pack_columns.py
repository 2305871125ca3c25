"""The delimited columns of conductor_record_outcomes_packed split back into the values."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conductor_server.state.postgres_store import pack_columns

# PostgreSQL text holds any character but NUL; UTF-8 has no surrogates.
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))


def split(separator: str, packed: str) -> list[str]:
    """What ``(string_to_array(packed, separator))[2:]`` gives in PostgreSQL."""
    return packed.split(separator)[1:] if packed else []


@given(st.lists(st.lists(TEXT, max_size=6), min_size=1, max_size=4))
def test_every_column_splits_back_into_its_values(columns: list[list[str]]) -> None:
    separator, packed = pack_columns(columns)
    assert [split(separator, text) for text in packed] == columns


def test_the_unit_separator_is_the_first_choice() -> None:
    assert pack_columns([["a", ""], ["", "b"]]) == ("\x1f", ["\x1fa\x1f", "\x1f\x1fb"])


def test_a_separator_inside_a_value_moves_to_a_character_no_value_holds() -> None:
    separator, packed = pack_columns([["a\x1f", " "], ["!"]])
    assert separator == '"'
    assert packed == ['"a\x1f" ', '"!']
