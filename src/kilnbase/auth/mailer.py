"""Auth's emails: render a template, pick the configured SMTP server, deliver after the response is sent.

Delivery happens after the response so that the send endpoints answer in the same time whether or not the
address has an account (no enumeration by timing), and a slow SMTP server never holds a request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import DictRow

from kilnbase.auth import email_templates, smtp_settings
from kilnbase.email import smtp
from kilnbase.keys.secret_box import SecretBox

log = logging.getLogger("kilnbase.auth.email")


@dataclass(frozen=True)
class PendingEmail:
    server: smtp.SmtpServer
    email: smtp.OutgoingEmail
    kind: str


async def prepare(
    cur: AsyncCursor[DictRow], box: SecretBox, template_type: str, to: str, values: dict[str, Any]
) -> PendingEmail | None:
    server = smtp_settings.server_of(await smtp_settings.load(cur), box)
    if server is None:
        log.warning("email not sent: SMTP is not configured", extra={"fields": {"template": template_type}})
        return None
    subject, html = await email_templates.render(cur, template_type, {"email": to, **values})
    return PendingEmail(server, smtp.OutgoingEmail(to=to, subject=subject, html=html), template_type)


async def deliver(pending: PendingEmail | None) -> None:
    if pending is None:
        return
    try:
        await smtp.send(pending.server, pending.email)
    except (OSError, Exception) as exc:
        log.error(
            "email delivery failed",
            extra={
                "fields": {
                    "template": pending.kind,
                    "smtp_host": pending.server.host,
                    "error": type(exc).__name__,
                }
            },
        )
