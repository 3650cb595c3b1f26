"""Email addresses as every sender reads them: one address, trimmed and lower-cased, with an `@`, a dot in
its domain, no spaces or control characters, and at most 254 characters (RFC 5321's limit for a path)."""

from __future__ import annotations

import re

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_ADDRESS = 254


def normalize_email(value: str) -> str:
    email = value.strip().lower()
    if len(email) > MAX_ADDRESS or not EMAIL_PATTERN.match(email) or _CONTROL.search(email):
        raise ValueError("Invalid email format")
    return email
