"""The project's SMTP server (`auth.smtp_config`, one row). The password is write-only: stored encrypted with
the project's SecretBox, reported only as `hasPassword`, and decrypted just before sending. Reading the row
and the server from it is `email/smtp_config.py`'s (every sender's), named here as well for auth's modules."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import DictRow
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kilnbase.auth.auth_config import iso
from kilnbase.email.addresses import normalize_email
from kilnbase.email.smtp_config import CONFIGURE_SMTP, PASSWORD_CONTEXT, is_usable, load, server_of
from kilnbase.http.errors import ApiError
from kilnbase.keys.secret_box import SecretBox

__all__ = [
    "CONFIGURE_SMTP",
    "SmtpConfigUpdate",
    "is_usable",
    "load",
    "not_configured",
    "server_of",
    "smtp_json",
    "upsert",
]


class SmtpConfigUpdate(BaseModel):
    """InsForge's SMTP settings: turning SMTP off needs nothing else, turning it on needs the server, the
    login and the sender (refused in InsForge's words). Unknown fields are ignored, as zod ignores them."""

    model_config = ConfigDict(strict=True, extra="ignore")

    enabled: bool
    host: str = Field("", max_length=255)
    #: Any port: InsForge allows only 25/465/587/2525, which rules out test servers and some relays.
    port: int = Field(ge=1, le=65535)
    username: str = Field("", max_length=255)
    password: str | None = Field(None, min_length=1, max_length=1024)
    senderEmail: str = Field("", max_length=254)
    senderName: str = Field("", max_length=255)
    minIntervalSeconds: int = Field(60, ge=0, le=86400)

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> SmtpConfigUpdate:
        if not self.enabled:
            return self
        problems = []
        if not self.host.strip():
            problems.append("host: SMTP host is required")
        if not self.username.strip():
            problems.append("username: SMTP username is required")
        try:
            self.senderEmail = normalize_email(self.senderEmail)
        except ValueError:
            problems.append("senderEmail: Invalid sender email")
        if not self.senderName.strip():
            problems.append("senderName: Sender name is required")
        if problems:
            # (one error for all, as zod's refinement lists them; `parse_body` prints it as it is)
            raise ValueError(", ".join(problems))
        return self


def smtp_json(row: DictRow | None) -> dict[str, Any]:
    if row is None:
        return {
            "id": None,
            "enabled": False,
            "host": "",
            "port": 587,
            "username": "",
            "hasPassword": False,
            "senderEmail": "",
            "senderName": "",
            "minIntervalSeconds": 60,
            "createdAt": None,
            "updatedAt": None,
        }
    return {
        "id": str(row["id"]),
        "enabled": row["enabled"],
        "host": row["host"],
        "port": row["port"],
        "username": row["username"],
        "hasPassword": row["password_ciphertext"] is not None,
        "senderEmail": row["sender_email"],
        "senderName": row["sender_name"],
        "minIntervalSeconds": row["min_interval_seconds"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


async def upsert(cur: AsyncCursor[DictRow], change: SmtpConfigUpdate, box: SecretBox) -> DictRow:
    ciphertext = box.encrypt(change.password, context=PASSWORD_CONTEXT) if change.password else None
    await cur.execute(
        "insert into auth.smtp_config (enabled, host, port, username, password_ciphertext, sender_email, "
        "sender_name, min_interval_seconds) values (%s, %s, %s, %s, %s, %s, %s, %s) "
        "on conflict (singleton) do update set enabled = excluded.enabled, host = excluded.host, "
        "port = excluded.port, username = excluded.username, "
        "password_ciphertext = coalesce(excluded.password_ciphertext, auth.smtp_config.password_ciphertext), "
        "sender_email = excluded.sender_email, sender_name = excluded.sender_name, "
        "min_interval_seconds = excluded.min_interval_seconds, updated_at = now() returning *",
        (
            change.enabled,
            change.host,
            change.port,
            change.username,
            ciphertext,
            change.senderEmail,
            change.senderName,
            change.minIntervalSeconds,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


def not_configured(what: str) -> ApiError:
    """503: `what` needs an email, and no SMTP server is configured to send it."""
    return ApiError(
        503,
        "EMAIL_PROVIDER_NOT_CONFIGURED",
        f"Email is not configured on this project, so {what} cannot be sent.",
        CONFIGURE_SMTP,
    )
