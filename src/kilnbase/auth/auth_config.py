"""The project's auth settings (`auth.config`, one row): password policy, verification methods, sign-up,
and the redirect allow-list. Read on every sign-up and email flow, changed by admins."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from psycopg import AsyncCursor
from psycopg.rows import DictRow
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from kilnbase.db.session import Database

#: InsForge's pattern for allow-list entries: http(s) URLs (optionally `*.` hosts) or app schemes.
ALLOWED_REDIRECT_PATTERN = re.compile(
    r"^(?:(?:https?://)(?:(?:\*\.)?[^\s/:?#]+|\[[0-9A-Fa-f:.]+\])(?::\d+)?(?:/\S*)?"
    r"|(?!(?:https?|javascript|data|file|vbscript):)[a-zA-Z][a-zA-Z0-9+.-]*:(?://[^\s/]+(?:/\S*)?|/\S*))$",
    re.IGNORECASE,
)

_COLUMNS = {
    "requireEmailVerification": "require_email_verification",
    "passwordMinLength": "password_min_length",
    "requireNumber": "require_number",
    "requireLowercase": "require_lowercase",
    "requireUppercase": "require_uppercase",
    "requireSpecialChar": "require_special_char",
    "verifyEmailMethod": "verify_email_method",
    "resetPasswordMethod": "reset_password_method",
    "allowedRedirectUrls": "allowed_redirect_urls",
    "disableSignup": "disable_signup",
}


def _redirect_url(url: str) -> str:
    if not ALLOWED_REDIRECT_PATTERN.match(url):
        raise ValueError("Invalid URL or wildcard URL")
    return url


#: What each setting but the allow-list must be, in zod's words (for a `null` sent in its place).
_NOT_NULL = {
    "requireEmailVerification": "boolean",
    "passwordMinLength": "number",
    "requireNumber": "boolean",
    "requireLowercase": "boolean",
    "requireUppercase": "boolean",
    "requireSpecialChar": "boolean",
    "verifyEmailMethod": "'code' | 'link'",
    "resetPasswordMethod": "'code' | 'link'",
    "disableSignup": "boolean",
}


class AuthConfigUpdate(BaseModel):
    """InsForge's partial config: unknown fields (`id`, `createdAt`, from a config read back) are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")

    requireEmailVerification: bool | None = None
    passwordMinLength: int | None = Field(None, ge=4, le=128)
    requireNumber: bool | None = None
    requireLowercase: bool | None = None
    requireUppercase: bool | None = None
    requireSpecialChar: bool | None = None
    verifyEmailMethod: Literal["code", "link"] | None = None
    resetPasswordMethod: Literal["code", "link"] | None = None
    allowedRedirectUrls: list[Annotated[str, AfterValidator(_redirect_url)]] | None = None
    disableSignup: bool | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _null(cls, value: Any, info: ValidationInfo) -> Any:
        """`null` sent for a setting: InsForge's schema takes it for the allow-list only (an empty list, as
        InsForge reads a null one); for any other setting it is refused as zod refuses it, never stored (each
        column is NOT NULL). (A setting left out is not validated: it stays None and is not changed.)"""
        if value is not None:
            return value
        if info.field_name == "allowedRedirectUrls":
            return []
        expected = _NOT_NULL[info.field_name or ""]
        raise ValueError(f"Expected {expected}, received null")


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def config_json(row: DictRow) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        **{name: row[column] for name, column in _COLUMNS.items()},
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


def public_config_json(row: DictRow) -> dict[str, Any]:
    body = config_json(row)
    for hidden in ("id", "createdAt", "updatedAt", "allowedRedirectUrls"):
        body.pop(hidden)
    return body


async def load(cur: AsyncCursor[DictRow]) -> DictRow:
    await cur.execute("select * from auth.config where singleton")
    row = await cur.fetchone()
    assert row is not None, "migration 0010 inserts the auth.config row"
    return row


async def read(db: Database) -> DictRow:
    async with db.as_owner() as cur:
        return await load(cur)


async def update(cur: AsyncCursor[DictRow], change: AuthConfigUpdate) -> DictRow:
    fields = change.model_dump(exclude_unset=True)
    assignments = [f"{_COLUMNS[name]} = %s" for name in fields]
    await cur.execute(
        f"update auth.config set {', '.join([*assignments, 'updated_at = now()'])} where singleton "
        f"returning *",
        list(fields.values()),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


def password_requirements(row: DictRow, *, too_long: bool = False) -> str:
    """InsForge's statement of the whole policy ("Password must contain at least 6 characters long, at
    least one number"), with Kilnbase's upper bound when that is what was missed."""
    requirements = [f"at least {row['password_min_length']} characters long"]
    for column, what in (
        ("require_number", "at least one number"),
        ("require_lowercase", "at least one lowercase letter"),
        ("require_uppercase", "at least one uppercase letter"),
        ("require_special_char", "at least one special character"),
    ):
        if row[column]:
            requirements.append(what)
    if too_long:
        requirements.append("at most 256 characters")
    return f"Password must contain {', '.join(requirements)}"


def password_problems(row: DictRow, password: str) -> list[str]:
    """What the password lacks under the configured policy (empty when it is acceptable)."""
    problems = []
    if len(password) < row["password_min_length"]:
        problems.append(f"at least {row['password_min_length']} characters")
    if len(password) > 256:
        problems.append("at most 256 characters")
    if row["require_number"] and not re.search(r"[0-9]", password):
        problems.append("a number")
    if row["require_lowercase"] and not re.search(r"[a-z]", password):
        problems.append("a lowercase letter")
    if row["require_uppercase"] and not re.search(r"[A-Z]", password):
        problems.append("an uppercase letter")
    if row["require_special_char"] and not re.search(r"[^A-Za-z0-9]", password):
        problems.append("a special character")
    return problems
