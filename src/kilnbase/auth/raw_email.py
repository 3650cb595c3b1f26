"""`POST /api/email/send-raw`: an app's own email (a receipt, a notification), sent through the project's SMTP
server. This is what `@insforge/sdk`'s `emails.send({to, subject, html, cc?, bcc?, from?, replyTo?})` calls.

It lives with auth because auth owns the SMTP settings. As InsForge does: any valid credential but the anon
key may send (a signed-in user, the API key), and the credential is checked before the body, so a caller
without one learns nothing of the body's rules; each recipient has the SMTP config's `minIntervalSeconds`
between two emails, counted only for an email that went out (a send the SMTP server refused, or one held
up by another recipient's interval, does not hold up the retry); the answer is `{}` once the server has
taken the message. `from` is a display name only:
the address is always the configured sender, so an app cannot send as someone else.

An SMTP server may take the message for some recipients and refuse others (InsForge, through nodemailer,
answers `{}` then, and the caller never learns). Here the answer names them, `{"refusedRecipients":
[{"email", "smtpCode"}]}`, with the reply code and not the server's words; a refused recipient's interval
is not used up (nothing went to them). A server that refuses every recipient is a 502, as any failed send.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import Field, field_validator

from kilnbase import audit
from kilnbase.auth import smtp_settings
from kilnbase.auth.parts import AuthParts
from kilnbase.auth.validation import StrictBody
from kilnbase.email import smtp
from kilnbase.email.addresses import normalize_email
from kilnbase.http.errors import ApiError
from kilnbase.http.rate_limit import seconds_to_wait
from kilnbase.identity.actor import Actor

MAX_RECIPIENTS = 50
MODULE = "EMAIL"
#: What to do about each kind of failed send (`smtp.SendFailure.kind`).
_SEND_FAILED_NEXT = {
    "login": "Check the username, password and port in the SMTP settings (PUT /api/auth/smtp-config).",
    "refused": "Check the recipients and the sender address; the SMTP server's own log says why it refused.",
    "connection": (
        "Check the host and port in the SMTP settings (GET /api/auth/smtp-config) and that the server is up."
    ),
}

log = logging.getLogger("kilnbase.auth.email")


def _addresses(value: Any) -> list[str]:
    """One address or a list of 1 to 50, each checked and normalized (zod's `emailOrEmails`)."""
    if isinstance(value, str):
        return [normalize_email(value)]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("Expected an email address or a list of them")
    if not value:
        raise ValueError("At least one email is required")
    if len(value) > MAX_RECIPIENTS:
        raise ValueError(f"Maximum {MAX_RECIPIENTS} recipients allowed")
    return [normalize_email(item) for item in value]


class RawEmail(StrictBody):
    to: list[str]
    subject: str = Field(min_length=1, max_length=500)
    html: str = Field(min_length=1)
    cc: list[str] = []
    bcc: list[str] = []
    sender_name: str | None = Field(None, alias="from", max_length=100)
    replyTo: str | None = None

    @field_validator("to", "cc", "bcc", mode="before")
    @classmethod
    def _recipients(cls, value: Any) -> list[str]:
        return _addresses(value)

    @field_validator("subject", "html", "sender_name", mode="before")
    @classmethod
    def _trimmed(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("subject", "sender_name")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        """A header is one line: a line break in the subject or the sender's name becomes a space, as a mail
        client shows a folded header (kept, it could start a header of the caller's choosing, and the mail
        library refuses it)."""
        return None if value is None else _LINE_BREAKS.sub(" ", value)

    @field_validator("replyTo")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalize_email(value)
        except ValueError:
            raise ValueError("Reply-To must be a valid email") from None


#: Line breaks of any kind a header could be split at.
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x85\u2028\u2029]+")


def _cooldown_key(recipient: str) -> str:
    return f"email-cooldown:{recipient}"


class RawEmails:
    def __init__(self, parts: AuthParts) -> None:
        self.parts = parts

    @staticmethod
    def check_sender(actor: Actor) -> None:
        """InsForge's order: the credential, before anything about the body (the route calls this first).
        An agent key may not send at all, whatever its scopes: an email reaches people outside the project
        in its name, so an agent's waits for a person (`send-message`, `POST /api/messaging/send`, held for
        approval). Refused rather than held here: no tool runs this call for an approval to run."""
        if actor.principal.db_role == "anon":
            raise ApiError(
                401,
                "AUTH_INVALID_CREDENTIALS",
                "Sending emails requires an authenticated user",
                "Sign in as a user (or use the API key from a server) to send emails.",
            )
        if actor.principal.agent is not None:
            raise ApiError(
                403,
                "FORBIDDEN",
                "An agent key may not send emails here: an email reaches people outside the project in its "
                "name, so an agent's waits for a person's approval.",
                "Send it with POST /api/messaging/send (the send-message tool), which holds it until a "
                "person approves.",
            )

    async def send(self, actor: Actor, body: RawEmail) -> tuple[smtp.Refused, ...]:
        """Send now and wait for the SMTP server's answer: the caller learns whether the email went out, and
        to whom it did not (the recipients refused while others were taken)."""
        self.check_sender(actor)
        async with self.parts.database.as_owner() as cur:
            row = await smtp_settings.load(cur)
        server = smtp_settings.server_of(row, self.parts.box)
        if row is None or server is None:
            raise smtp_settings.not_configured("an email")
        taken: list[str] = []
        try:
            for recipient in dict.fromkeys(body.to):  # (an address named twice is one recipient)
                if await self._cooldown(recipient, row["min_interval_seconds"]):
                    taken.append(recipient)
            refused = await self._deliver(server, body)
        except Exception:
            # Nothing went out: the intervals this attempt took must not hold up the retry.
            for recipient in taken:
                await self.parts.limiter.forget(_cooldown_key(recipient))
            raise
        # Nor does the interval of a recipient the server refused: nothing went to them either.
        not_sent = {item.address.lower() for item in refused}
        for recipient in taken:
            if recipient.lower() in not_sent:
                await self.parts.limiter.forget(_cooldown_key(recipient))
        details = {"recipients": len(body.to) + len(body.cc) + len(body.bcc), "refused": len(refused)}
        await audit.record(self.parts.database, actor, "SEND_EMAIL", MODULE, details)
        return refused

    async def _cooldown(self, recipient: str, seconds: int) -> bool:
        """InsForge's per-recipient spacing, counted across processes, in its words: True when this send
        started the recipient's interval, False when there is none."""
        if seconds <= 0:
            return False
        wait = await seconds_to_wait(self.parts.limiter, _cooldown_key(recipient), 1, seconds)
        if wait is not None:
            raise ApiError(
                429,
                "RATE_LIMITED",
                f"Too many emails to this address. Retry after {wait}s.",
                f"Wait {wait} seconds, or raise minIntervalSeconds in PUT /api/auth/smtp-config.",
            )
        return True

    async def _deliver(self, server: smtp.SmtpServer, body: RawEmail) -> tuple[smtp.Refused, ...]:
        email = smtp.OutgoingEmail(
            to=", ".join(body.to),
            subject=body.subject,
            html=body.html,
            cc=tuple(body.cc),
            bcc=tuple(body.bcc),
            reply_to=body.replyTo,
            sender_name=body.sender_name or None,
        )
        try:
            refused = await smtp.send(server, email)
        except OSError as exc:  # (smtplib's errors are OSErrors)
            # The SMTP server (not the caller) failed: an upstream error, never a 500. Its reply text stays
            # out of the answer (`smtp.failure_of`); the log has the kind of error, for the operator.
            failure = smtp.failure_of(exc)
            fields = {"smtp_host": server.host, "error": type(exc).__name__, "code": failure.code}
            log.warning("email send failed", extra={"fields": fields})
            reply = f" (SMTP reply {failure.code})" if failure.code is not None else ""
            raise ApiError(
                502,
                "EMAIL_SMTP_SEND_FAILED",
                f"Failed to send email via SMTP: {failure.summary}{reply}.",
                _SEND_FAILED_NEXT[failure.kind],
            ) from None
        if refused:
            codes = " ".join(str(code) for code in sorted({item.code for item in refused}))
            sent = {"smtp_host": server.host, "refused": len(refused), "codes": codes}
            log.warning("email sent, but the SMTP server refused some recipients", extra={"fields": sent})
        return refused
