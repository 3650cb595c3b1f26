"""Sending one email through an SMTP server, with the standard library in a worker thread.

Port 465 speaks TLS from the first byte; any other port upgrades with STARTTLS when the server offers it
(always for 587). Credentials are only sent when configured.

A failed send is described by `failure_of` in words of our own, with the server's reply code: never with the
server's reply text or the exception's, which can carry the server's host names and configuration, the login
it refused, or whatever a misconfigured relay chooses to echo. A send the server took for some recipients
but not others returns the refused ones (`Refused`), likewise with the reply code only.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Literal

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


@dataclass(frozen=True)
class Refused:
    """A recipient the server refused while it took the email for others: the address, as it was sent, and
    the reply code (the reply's text stays out, as in `failure_of`)."""

    address: str
    code: int


def send_sync(server: SmtpServer, email: OutgoingEmail) -> tuple[Refused, ...]:
    """Send `email`; the recipients the server refused, when it took the email for at least one (when it
    refuses every one, `smtplib.SMTPRecipientsRefused` is raised)."""
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
        refused = client.send_message(_message(server, email))
    return tuple(Refused(address, code) for address, (code, _reply) in refused.items())


async def send(server: SmtpServer, email: OutgoingEmail) -> tuple[Refused, ...]:
    return await anyio.to_thread.run_sync(send_sync, server, email)


@dataclass(frozen=True)
class SendFailure:
    """What a failed send may tell the one who asked for it: which kind of failure, the SMTP reply code when
    the server answered with one, and a fixed sentence."""

    kind: Literal["login", "refused", "connection"]
    code: int | None
    summary: str


def failure_of(exc: OSError) -> SendFailure:
    """`exc`, raised by `send`, as a `SendFailure` (smtplib's errors are OSErrors, as are the socket's)."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return SendFailure("login", exc.smtp_code, "the server refused the configured username or password")
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return SendFailure("refused", exc.smtp_code, "the server refused the sender address")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _reply in exc.recipients.values()]
        return SendFailure("refused", codes[0] if codes else None, "the server refused every recipient")
    if isinstance(exc, smtplib.SMTPResponseException):
        return SendFailure("refused", exc.smtp_code, "the server refused the email")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return SendFailure("login", None, "the server lacks the login or STARTTLS the settings need")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return SendFailure("connection", None, "the server closed the connection")
    if isinstance(exc, ssl.SSLError):
        return SendFailure("connection", None, "the TLS connection to the server failed")
    if isinstance(exc, TimeoutError):
        return SendFailure("connection", None, "the server did not answer in time")
    if isinstance(exc, smtplib.SMTPException):
        return SendFailure("refused", None, "the conversation with the server failed")
    return SendFailure("connection", None, "could not connect to the server")
