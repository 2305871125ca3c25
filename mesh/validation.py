"""Request validation that collects every bad field, then raises one ``InvalidArgument``.

Converters parse requests into domain values here, at the edge, so the domain never sees a
malformed id. Identifiers are 1-255 characters with no whitespace or control characters (ids
travel in Redis keys, Kafka keys and URLs); text may be anything PostgreSQL can store (every
character but NUL: a ``text`` column refuses ``\x00``), bounded in size. The same checks run in
every mode, so a request the embedded server accepts is one the real backends can store.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from mesh.errors import FieldViolation, InvalidArgument

MAX_ID_LENGTH = 255
MAX_NAME_LENGTH = 128


def is_bad_char(char: str) -> bool:
    """Whitespace, a control, format, surrogate, private-use or unassigned character, a brace."""
    return char.isspace() or unicodedata.category(char).startswith("C") or char in "{}"


def _bad_char(value: str) -> str | None:
    """The first bad character of ``value``, or None.

    ``str.isprintable`` is false exactly for the categories C* and Z* other than the ASCII
    space, and every Z* character is whitespace, so an id that is printable and has no space
    or brace has no bad character: one C-speed pass for the usual, valid id.
    """
    if value.isprintable() and " " not in value and "{" not in value and "}" not in value:
        return None
    return next((char for char in value if is_bad_char(char)), None)


class Violations:
    """Collects field violations; ``raise_if_any()`` at the end of parsing a request."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def identifier(self, field: str, value: str, max_length: int = MAX_ID_LENGTH) -> str:
        """A required id: non-empty, bounded, no whitespace, control characters or braces."""
        if not value:
            self.add(field, "is required")
        elif len(value) > max_length:
            self.add(field, f"must be at most {max_length} characters (got {len(value)})")
        elif (char := _bad_char(value)) is not None:
            self.add(field, f"must not contain {char!r} (whitespace, control characters, braces)")
        return value

    def optional_identifier(self, field: str, value: str) -> str:
        return self.identifier(field, value) if value else value

    def identifiers(self, field: str, values: Iterable[str], max_items: int) -> tuple[str, ...]:
        """A non-empty list of unique ids."""
        items = tuple(values)
        if not items:
            self.add(field, "must contain at least one id")
        elif len(items) > max_items:
            self.add(field, f"must contain at most {max_items} ids (got {len(items)})")
            return items
        seen: set[str] = set()
        for index, item in enumerate(items):
            self.identifier(f"{field}[{index}]", item)
            if item in seen:
                self.add(f"{field}[{index}]", f"duplicate id {item!r}")
            seen.add(item)
        return items

    def text(self, field: str, value: str, max_bytes: int, required: bool = True) -> str:
        """Free text: at most ``max_bytes`` of UTF-8, no NUL (PostgreSQL cannot store it)."""
        if required and not value.strip():
            self.add(field, "must not be empty")
        elif len(value.encode()) > max_bytes:
            self.add(field, f"must be at most {max_bytes} bytes")
        elif "\x00" in value:
            self.add(field, "must not contain NUL ('\\x00') characters")
        return value

    def flags(self, field: str, values: dict[str, bool]) -> frozenset[str]:
        """Flag names that are set (true); each name is an identifier."""
        if not values:
            return frozenset()
        for name in values:
            self.identifier(f"{field}[{name!r}]", name, MAX_NAME_LENGTH)
        return frozenset(name for name, value in values.items() if value)

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)
