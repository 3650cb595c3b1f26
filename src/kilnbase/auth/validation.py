"""What auth checks in its inputs beyond a model's types: email addresses, user ids, and text Postgres can
store (a NUL character cannot be stored in `text` or `jsonb`: it is refused here as a 400 rather than failing
in the database as a 500)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def normalize_email(value: str) -> str:
    email = value.strip().lower()
    if len(email) > 254 or not EMAIL_PATTERN.match(email) or _CONTROL.search(email):
        raise ValueError("Invalid email format")
    return email


def storable(value: Any) -> Any:
    """`value` (text, or JSON with text in it), refused when any string or key holds a NUL character."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            storable(key)
            storable(item)
    elif isinstance(value, list):
        for item in value:
            storable(item)
    return value


class StrictBody(BaseModel):
    """A request body: JSON types as they are (no coercion), unknown fields ignored (as InsForge does)."""

    model_config = ConfigDict(strict=True, extra="ignore")


class WithEmail(StrictBody):
    email: str

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return normalize_email(value)
