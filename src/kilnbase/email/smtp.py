"""Sending one email through an SMTP server, with the standard library in a worker thread.

Port 465 speaks TLS from the first byte; any other port upgrades with STARTTLS when the server offers it
(always for 587). Credentials are only sent when configured.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

import anyio.to_thread

_TIMEOUT_SECONDS = 15


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    username: str
    password: str | None
    sender_email: str
    sender_name: str


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    subject: str
    html: str
    cc: tuple[str, ...] = ()
    #: Delivered to, never shown: `send_message` takes the Bcc header out of what it transmits.
    bcc: tuple[str, ...] = ()
    reply_to: str | None = None
    #: A display name for this email instead of the server's (the address stays the server's).
    sender_name: str | None = None


def _message(server: SmtpServer, email: OutgoingEmail) -> EmailMessage:
    message = EmailMessage()
    message["From"] = formataddr((email.sender_name or server.sender_name, server.sender_email))
    message["To"] = email.to
    if email.cc:
        message["Cc"] = ", ".join(email.cc)
    if email.bcc:
        message["Bcc"] = ", ".join(email.bcc)
    if email.reply_to:
        message["Reply-To"] = email.reply_to
    message["Subject"] = email.subject
    message["Message-ID"] = make_msgid(domain=server.sender_email.rsplit("@", 1)[-1] or None)
    message.set_content("This message needs an email client that displays HTML.")
    message.add_alternative(email.html, subtype="html")
    return message


def send_sync(server: SmtpServer, email: OutgoingEmail) -> None:
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if server.port == 465:
        client = smtplib.SMTP_SSL(server.host, server.port, timeout=_TIMEOUT_SECONDS, context=context)
    else:
        client = smtplib.SMTP(server.host, server.port, timeout=_TIMEOUT_SECONDS)
    with client:
        client.ehlo()
        if server.port != 465 and (server.port == 587 or client.has_extn("starttls")):
            client.starttls(context=context)
            client.ehlo()
        if server.username and server.password:
            client.login(server.username, server.password)
        client.send_message(_message(server, email))


async def send(server: SmtpServer, email: OutgoingEmail) -> None:
    await anyio.to_thread.run_sync(send_sync, server, email)
