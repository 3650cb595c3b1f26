"""What auth checks in its inputs beyond a model's types: email addresses and user ids."""

from __future__ import annotations

import re
from typing import TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def normalize_email(value: str) -> str:
    email = value.strip().lower()
    if len(email) > 254 or not EMAIL_PATTERN.match(email):
        raise ValueError("Invalid email format")
    return email
