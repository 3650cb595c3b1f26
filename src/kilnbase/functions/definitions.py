"""A function's definition as the API takes it: InsForge's fields and rules, checked before anything runs.

Slugs follow InsForge (`^[A-Za-z0-9_-]+$`, derived from the name when absent, `health` reserved because the
runtime answers it); statuses are `draft` (stored, not served), `active` (served) and `error` (set by the
server, never sent). Code is bounded in size (413 past the limit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kilnbase.http.errors import ApiError

SLUG = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_SLUG = 64
RESERVED_SLUGS = frozenset({"health"})
STATUSES = ("draft", "active")
MAX_NAME = 200
MAX_DESCRIPTION = 2000


def check_slug(slug: str) -> str:
    if not slug or len(slug) > MAX_SLUG or not SLUG.match(slug):
        raise ApiError(
            400,
            "INVALID_INPUT",
            "Invalid slug format - must be alphanumeric with hyphens or underscores only "
            f"(at most {MAX_SLUG} characters)",
        )
    if slug.lower() in RESERVED_SLUGS:
        raise ApiError(
            400,
            "INVALID_INPUT",
            'Reserved slug - "health" is used by the functions runtime and cannot be used as a function slug',
        )
    return slug


def _text(body: dict[str, Any], name: str, limit: int, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, "INVALID_INPUT", f"{name} is required")
        return None
    if not isinstance(value, str) or (required and not value):
        raise ApiError(400, "INVALID_INPUT", f"{name} must be a non-empty string")
    if len(value) > limit:
        raise ApiError(400, "INVALID_INPUT", f"{name} is limited to {limit} characters")
    return value


def _code(body: dict[str, Any], max_bytes: int, *, required: bool) -> str | None:
    code = body.get("code")
    if code is None and not required:
        return None
    if not isinstance(code, str) or not code.strip():
        raise ApiError(400, "INVALID_INPUT", "code is required and must be a non-empty string")
    if len(code.encode()) > max_bytes:
        raise ApiError(
            413,
            "INVALID_INPUT",
            f"The function's code is larger than {max_bytes} bytes.",
            "Split it, or raise KILNBASE_FUNCTIONS_MAX_CODE_BYTES.",
        )
    return code


def _status(body: dict[str, Any], default: str | None) -> str | None:
    status = body.get("status", default)
    if status is not None and status not in STATUSES:
        raise ApiError(400, "INVALID_INPUT", "status must be 'draft' or 'active'")
    return status


def _secrets(body: dict[str, Any]) -> tuple[bool, list[str] | None]:
    """`secrets`: the keys the function may read (absent: unchanged; null: every active secret)."""
    if "secrets" not in body:
        return False, None
    value = body["secrets"]
    if value is None:
        return True, None
    if not isinstance(value, list) or not all(
        isinstance(k, str) and re.match(r"^[A-Z0-9_]+$", k) for k in value
    ):
        raise ApiError(400, "INVALID_INPUT", "secrets must be a list of secret keys (A-Z, 0-9, _), or null")
    return True, sorted(set(value))


@dataclass(frozen=True)
class NewFunction:
    slug: str
    name: str
    code: str
    description: str | None
    status: str
    secrets: list[str] | None

    @classmethod
    def parse(cls, body: dict[str, Any], max_code_bytes: int) -> NewFunction:
        name = _text(body, "name", MAX_NAME, required=True)
        assert name is not None
        raw_slug = body.get("slug")
        if raw_slug is not None and not isinstance(raw_slug, str):
            raise ApiError(400, "INVALID_INPUT", "slug must be a string")
        slug = check_slug(raw_slug if raw_slug is not None else re.sub(r"\s+", "-", name.lower()))
        code = _code(body, max_code_bytes, required=True)
        assert code is not None
        status = _status(body, "active")
        assert status is not None
        _given, secrets = _secrets(body)
        return cls(slug, name, code, _text(body, "description", MAX_DESCRIPTION), status, secrets)


@dataclass(frozen=True)
class FunctionChanges:
    name: str | None
    code: str | None
    description: str | None
    status: str | None
    secrets_given: bool
    secrets: list[str] | None

    @classmethod
    def parse(cls, body: dict[str, Any], max_code_bytes: int) -> FunctionChanges:
        unknown = set(body) - {"name", "code", "description", "status", "secrets"}
        if unknown:
            raise ApiError(400, "INVALID_INPUT", f"Unknown fields: {', '.join(sorted(unknown))}")
        secrets_given, secrets = _secrets(body)
        name = _text(body, "name", MAX_NAME)
        if name is not None and not name:
            raise ApiError(400, "INVALID_INPUT", "name must be a non-empty string")
        return cls(
            name=name,
            code=_code(body, max_code_bytes, required=False),
            description=_text(body, "description", MAX_DESCRIPTION),
            status=_status(body, None),
            secrets_given=secrets_given,
            secrets=secrets,
        )

    @property
    def empty(self) -> bool:
        return not self.secrets_given and all(
            value is None for value in (self.name, self.code, self.description, self.status)
        )
