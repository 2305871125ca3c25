"""Identifier checks: the fast path agrees with the per-character definition on any text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.errors import InvalidArgument
from mesh.validation import Violations, _bad_char, is_bad_char


@given(st.text(st.characters(codec=None), max_size=40))
def test_fast_check_agrees_with_the_definition(value: str) -> None:
    expected = next((char for char in value if is_bad_char(char)), None)
    assert _bad_char(value) == expected


@pytest.mark.parametrize(
    "char",
    [
        " ",
        "\t",
        "\n",
        "\x00",
        "\x7f",
        "\u00a0",
        "\u2028",
        "\u2029",
        "\u200b",
        "\ufeff",
        "\ud800",
        "\ue000",
        "\U000e0001",
        "{",
        "}",
    ],
)
def test_each_kind_of_bad_character_is_refused(char: str) -> None:
    v = Violations()
    v.identifier("batch_id", f"batch{char}1")
    with pytest.raises(InvalidArgument) as raised:
        v.raise_if_any()
    (violation,) = raised.value.violations
    assert violation.field == "batch_id"
    assert repr(char) in violation.description


@pytest.mark.parametrize("value", ["b-1", "essay_ü_1", "批次-7", "a:b/c.d@e", "x" * 255])
def test_printable_ids_pass(value: str) -> None:
    v = Violations()
    assert v.identifier("batch_id", value) == value
    v.raise_if_any()


@pytest.mark.parametrize("value", ["\x00", "a\x00", "\x00b", "essay \x00 text"])
def test_text_with_a_nul_is_refused_as_postgresql_cannot_store_it(value: str) -> None:
    v = Violations()
    v.text("essays[0].text", value, 1024)
    with pytest.raises(InvalidArgument) as raised:
        v.raise_if_any()
    (violation,) = raised.value.violations
    assert violation.field == "essays[0].text"
    assert "NUL" in violation.description


@pytest.mark.parametrize("value", ["Teh cat.", "tabs\tand\nnewlines", "\x7f\u2028ünïcode 批"])
def test_other_text_passes(value: str) -> None:
    v = Violations()
    assert v.text("text", value, 1024) == value
    v.raise_if_any()
