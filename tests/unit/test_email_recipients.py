"""Who an email goes to is the addresses named, read from its headers: so no address may be one a header reads
otherwise (`root,b@x.io` is two mailboxes to a header, `a;b@x.io` a group); Bcc is delivered, never shown."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from kilnbase.email import smtp
from kilnbase.email.addresses import normalize_email
from tests.support.smtp_server import SmtpServer


@pytest.fixture(scope="module")
def relay() -> Iterator[SmtpServer]:
    server = SmtpServer(username="relay", password=secrets.token_hex(8))
    server.start()
    yield server
    server.stop()


def _server(relay: SmtpServer) -> smtp.SmtpServer:
    return smtp.SmtpServer("127.0.0.1", relay.port, relay.username, relay.password, "app@example.com", "App")


def _send(relay: SmtpServer, email: smtp.OutgoingEmail) -> list[str]:
    smtp.send_sync(_server(relay), email)
    return relay.last_for(email.to).to


@pytest.mark.parametrize("address", ["root,b@x.io", "a;b@x.io", "g:c@x.io", "(c)a@x.io"])
def test_an_address_a_header_reads_otherwise_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="Invalid email format"):
        normalize_email(address)
    assert normalize_email(" Person+Tag@Example.COM ") == "person+tag@example.com"


def test_cc_and_bcc_are_delivered_and_bcc_is_not_shown(relay: SmtpServer) -> None:
    tag = secrets.token_hex(4)
    to, cc, bcc = f"to-{tag}@x.io", f"cc-{tag}@x.io", f"bcc-{tag}@x.io"
    sent = smtp.OutgoingEmail(to=to, subject="s", html="<p>h</p>", cc=(cc,), bcc=(bcc,))
    assert sorted(_send(relay, sent)) == sorted([to, cc, bcc])
    message = relay.last_for(to).message
    assert message["Bcc"] is None and message["Cc"] == cc
