"""The project's SMTP server as stored (`auth.smtp_config`, one row, written by auth's
`PUT /api/auth/smtp-config`), read by every capability that sends email: auth's own emails and an app's
(`/api/email/send-raw`), and the messaging outbox. Auth owns the settings; reading them lives here, below
the capabilities, so that a sender need not import auth.

The password is stored encrypted with the project's SecretBox (under `PASSWORD_CONTEXT`) and decrypted only
to build the `SmtpServer` a send goes through; whoever calls `server_of` hands in the box."""

from __future__ import annotations

from typing import Any, Protocol

from psycopg import AsyncCursor
from psycopg.rows import DictRow

from kilnbase.email.smtp import SmtpServer

PASSWORD_CONTEXT = "auth.smtp_config.password"  # noqa: S105 (a label, not a password)

#: What to configure, said wherever an email cannot go out for want of SMTP.
CONFIGURE_SMTP = (
    "An admin configures SMTP with PUT /api/auth/smtp-config "
    "{enabled: true, host, port, username, password, senderEmail, senderName}."
)


class Decrypting(Protocol):
    """The project's SecretBox, as far as reading the password needs it."""

    def decrypt(self, stored: str, *, context: str = "") -> str: ...


async def load(cur: AsyncCursor[DictRow]) -> DictRow | None:
    await cur.execute("select * from auth.smtp_config where singleton")
    return await cur.fetchone()


def is_usable(row: dict[str, Any] | None) -> bool:
    """Whether emails have a server to go through (configured and enabled)."""
    return row is not None and bool(row["enabled"]) and bool(row["host"])


def server_of(row: dict[str, Any] | None, box: Decrypting) -> SmtpServer | None:
    """The server to send through, or None when SMTP is not configured and enabled."""
    if row is None or not is_usable(row):
        return None
    password = None
    if row["password_ciphertext"]:
        password = box.decrypt(row["password_ciphertext"], context=PASSWORD_CONTEXT)
    return SmtpServer(
        host=row["host"],
        port=row["port"],
        username=row["username"],
        password=password,
        sender_email=row["sender_email"],
        sender_name=row["sender_name"],
    )
