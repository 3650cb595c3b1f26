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
SLUG_RULES = (
    f"Send a slug of letters, digits, '-' and '_' (at most {MAX_SLUG}), e.g. send-email; when left out, "
    "it is made from the name."
)


def check_slug(slug: str) -> str:
    if not slug or len(slug) > MAX_SLUG or not SLUG.match(slug):
        raise ApiError(
            400,
            "INVALID_INPUT",
            "Invalid slug format - must be alphanumeric with hyphens or underscores only "
            f"(at most {MAX_SLUG} characters)",
            SLUG_RULES,
        )
    if slug.lower() in RESERVED_SLUGS:
        raise ApiError(
            400,
            "INVALID_INPUT",
            'Reserved slug - "health" is used by the functions runtime and cannot be used as a function slug',
            "Choose another slug.",
        )
    return slug


def _text(body: dict[str, Any], name: str, limit: int, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, "INVALID_INPUT", f"{name} is required", f"Send {name} as a non-empty string.")
        return None
    if not isinstance(value, str) or (required and not value):
        raise ApiError(
            400, "INVALID_INPUT", f"{name} must be a non-empty string", f"Send {name} as a non-empty string."
        )
    if len(value) > limit:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"{name} is limited to {limit} characters",
            f"Shorten {name} to at most {limit} characters.",
        )
    return value


def _code(body: dict[str, Any], max_bytes: int, *, required: bool) -> str | None:
    code = body.get("code")
    if code is None and not required:
        return None
    if not isinstance(code, str) or not code.strip():
        raise ApiError(
            400,
            "INVALID_INPUT",
            "code is required and must be a non-empty string",
            "Send the function's source as code, e.g. export default async function (req) { ... }.",
        )
    if len(code.encode()) > max_bytes:
        raise ApiError(
            413,
            "INVALID_INPUT",
            f"The function's code is larger than {max_bytes} bytes.",
            "Split it, or raise KILNBASE_FUNCTIONS_MAX_CODE_BYTES.",
        )
    return code


def _status(body: dict[str, Any], default: str | None) -> str | None:
    """`status`, or `default` when absent. An explicit null is refused where there is a default (a new
    function), as InsForge's schema refuses it; for changes, null leaves the status as it is."""
    status = body.get("status", default)
    if (status is None and default is not None) or (status is not None and status not in STATUSES):
        raise ApiError(
            400,
            "INVALID_INPUT",
            "status must be 'draft' or 'active'",
            'Send status "active" to serve the function or "draft" to store it unserved.',
        )
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
        raise ApiError(
            400,
            "INVALID_INPUT",
            "secrets must be a list of secret keys (A-Z, 0-9, _), or null",
            'Send secrets as the keys the function may read, e.g. ["STRIPE_API_KEY"], or null for '
            "every active secret.",
        )
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
            raise ApiError(400, "INVALID_INPUT", "slug must be a string", SLUG_RULES)
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
            raise ApiError(
                400,
                "INVALID_INPUT",
                f"Unknown fields: {', '.join(sorted(unknown))}",
                "Send only name, code, description, status and secrets; the slug cannot change.",
            )
        secrets_given, secrets = _secrets(body)
        name = _text(body, "name", MAX_NAME)
        if name is not None and not name:
            raise ApiError(
                400,
                "INVALID_INPUT",
                "name must be a non-empty string",
                "Send a name, or leave it out to keep the current one.",
            )
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
