"""The five editable email templates (`auth.email_templates`), rendered in a sandbox with autoescaping, so an
admin-edited template can use `{{ code }}`, `{{ link }}`, `{{ email }}`, `{{ expires_in_minutes }}` and
`{{ app_name }}` but cannot reach Python objects."""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment
from psycopg import AsyncCursor
from psycopg.rows import DictRow
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kilnbase.auth.auth_config import iso

TEMPLATE_TYPES = (
    "email-verification-code",
    "email-verification-link",
    "request-otp",
    "reset-password-code",
    "reset-password-link",
)

_ENVIRONMENT = SandboxedEnvironment(autoescape=True)
_SUBJECT_ENVIRONMENT = SandboxedEnvironment(autoescape=False)


class TemplateUpdate(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")  # (unknown fields ignored, as zod does)

    subject: str = Field(min_length=1, max_length=500)
    bodyHtml: str = Field(min_length=1, max_length=100_000)

    @field_validator("subject", "bodyHtml")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            _ENVIRONMENT.parse(value)
        except TemplateError as exc:
            raise ValueError(f"template syntax error: {exc}") from None
        return value


def template_json(row: DictRow) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "templateType": row["template_type"],
        "subject": row["subject"],
        "bodyHtml": row["body_html"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


async def list_all(cur: AsyncCursor[DictRow]) -> list[DictRow]:
    await cur.execute("select * from auth.email_templates order by template_type")
    return await cur.fetchall()


async def update(cur: AsyncCursor[DictRow], template_type: str, change: TemplateUpdate) -> DictRow | None:
    await cur.execute(
        "update auth.email_templates set subject = %s, body_html = %s, updated_at = now() "
        "where template_type = %s returning *",
        (change.subject, change.bodyHtml, template_type),
    )
    return await cur.fetchone()


async def render(cur: AsyncCursor[DictRow], template_type: str, values: dict[str, Any]) -> tuple[str, str]:
    await cur.execute(
        "select subject, body_html from auth.email_templates where template_type = %s", (template_type,)
    )
    row = await cur.fetchone()
    assert row is not None, f"template {template_type} is seeded by migration 0010"
    subject = _SUBJECT_ENVIRONMENT.from_string(row["subject"]).render(values)
    body = _ENVIRONMENT.from_string(row["body_html"]).render(values)
    return " ".join(subject.split()), body
