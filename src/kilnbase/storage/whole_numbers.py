"""Whole numbers as storage's clients send them, in headers, query strings and S3's XML."""

from __future__ import annotations

#: More digits than any count, size or offset storage takes (2**63 has 19).
MOST_DIGITS = 19


def is_whole_number(text: str) -> bool:
    """ASCII digits only, and not too many for `int`: `str.isdigit` is true of `²` (Latin-1 0xB2 in a
    header), which `int` refuses, and `int` refuses more than 4,300 digits too; either was a 500."""
    return 0 < len(text) <= MOST_DIGITS and text.isascii() and text.isdigit()
