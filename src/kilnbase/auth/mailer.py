"""Auth's emails: render a template, pick the configured SMTP server, and do it all off the request path.

A send endpoint answers before any of the work that depends on whether the address has an account (the
lookup, the code, the template, the delivery) has started: that work runs in a task of its own
(`Mailer.later`), so the answer takes the same time for known and unknown addresses (no enumeration by
timing), and a slow SMTP server or a busy table never holds a request. Tasks still running at shutdown are
given a few seconds to finish (`drain`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import DictRow

from kilnbase.auth import email_templates, smtp_settings
from kilnbase.email import smtp
from kilnbase.keys.secret_box import SecretBox

log = logging.getLogger("kilnbase.auth.email")

_DRAIN_SECONDS = 10.0


@dataclass(frozen=True)
class PendingEmail:
    server: smtp.SmtpServer
    email: smtp.OutgoingEmail
    kind: str


class Mailer:
    def __init__(self, box: SecretBox) -> None:
        self._box = box
        self._tasks: set[asyncio.Task[None]] = set()

    async def prepare(
        self, cur: AsyncCursor[DictRow], template_type: str, to: str, values: dict[str, Any]
    ) -> PendingEmail | None:
        """The rendered email and the server to send it through; None when SMTP is not configured."""
        server = smtp_settings.server_of(await smtp_settings.load(cur), self._box)
        if server is None:
            log.warning(
                "email not sent: SMTP is not configured", extra={"fields": {"template": template_type}}
            )
            return None
        subject, html = await email_templates.render(cur, template_type, {"email": to, **values})
        return PendingEmail(server, smtp.OutgoingEmail(to=to, subject=subject, html=html), template_type)

    def later(self, work: Callable[[], Awaitable[PendingEmail | None]]) -> None:
        """Run `work` (which decides what to send, if anything) and deliver its email, in a task."""
        task = asyncio.create_task(self._run(work), name="kilnbase-auth-email")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def send(self, pending: PendingEmail | None) -> None:
        """Deliver an email already prepared, in a task."""
        if pending is not None:
            self.later(lambda: _ready(pending))

    async def drain(self) -> None:
        """Wait (a little) for emails still on their way; called when the server stops."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=_DRAIN_SECONDS)

    async def _run(self, work: Callable[[], Awaitable[PendingEmail | None]]) -> None:
        try:
            pending = await work()
        except Exception:
            log.exception("preparing an auth email failed")
            return
        if pending is not None:
            await deliver(pending)


async def _ready(pending: PendingEmail) -> PendingEmail:
    return pending


async def deliver(pending: PendingEmail) -> None:
    try:
        await smtp.send(pending.server, pending.email)
    except Exception as exc:
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
