"""Email addresses as every sender reads them: one address, trimmed and lower-cased, with an `@`, a dot in
its domain, no spaces or control characters, at most 254 characters (RFC 5321's limit for a path), and one
mailbox as a mail header reads it (`is_one_mailbox`; InsForge's zod check refuses these characters too)."""

from __future__ import annotations

import re
from email.utils import getaddresses

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_ADDRESS = 254


def normalize_email(value: str) -> str:
    email = value.strip().lower()
    if len(email) > MAX_ADDRESS or not EMAIL_PATTERN.match(email) or _CONTROL.search(email):
        raise ValueError("Invalid email format")
    if not is_one_mailbox(email):
        raise ValueError("Invalid email format")
    return email


def is_one_mailbox(email: str) -> bool:
    """Whether a mail header reads `email` as exactly that one address. The pattern above takes a comma, a
    semicolon, a colon or a parenthesis in the part before the `@`, where a header reads a list, a group or
    a comment: `root,b@x.io` is two recipients (`root`, a mailbox of the relay's own, and `b@x.io`)."""
    return getaddresses([email]) == [("", email)]
