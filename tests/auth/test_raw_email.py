"""`POST /api/email/send-raw`: the credential is checked before the body (InsForge's order: a 401 comes
before any 400), and a recipient's minimum interval counts only emails that went out, so a send the SMTP
server refused, or one held up by another recipient's interval, does not hold up the retry. A failed send
says what failed and the SMTP reply code, never the SMTP server's own words (InsForge: a generic 500)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.auth.conftest import new_email, sign_up, smtp_body
from tests.support.app import agent_headers, anon_headers
from tests.support.servers import free_port
from tests.support.smtp_server import SmtpServer

PATH = "/api/email/send-raw"
INVALID = {"to": "not-an-address", "subject": "", "html": ""}


def _email(*to: str) -> dict[str, Any]:
    return {"to": list(to), "subject": "Receipt", "html": "<p>Thanks</p>"}


@pytest.fixture
def spaced(client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer) -> Iterator[Any]:
    """`configure(port)`: the SMTP config with a 60 s minimum interval per recipient, at `port`."""

    def configure(port: int) -> None:
        body = smtp_body(smtp, port=port, minIntervalSeconds=60)
        assert client.put("/api/auth/smtp-config", json=body, headers=admin_headers).status_code == 200

    yield configure
    client.put("/api/auth/smtp-config", json=smtp_body(smtp), headers=admin_headers)


def test_the_credential_is_checked_before_the_body(client: TestClient) -> None:
    for headers in ({}, anon_headers(client)):
        response = client.post(PATH, json=INVALID, headers=headers)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "AUTH_INVALID_CREDENTIALS"
    user = {"Authorization": f"Bearer {sign_up(client)['accessToken']}"}
    assert client.post(PATH, json=INVALID, headers=user).status_code == 400


@pytest.mark.parametrize("scopes", [["auth:write"], ["*:write"]], ids=["auth-write", "every-write"])
def test_an_agent_key_sends_nothing_here(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer, scopes: list[str]
) -> None:
    """An email reaches people outside the project in its name, so an agent's send waits for a person
    (messaging's `POST /api/messaging/send` holds it for approval): here, where nothing could hold it, an
    agent key is refused whatever its scopes, and no email goes out."""
    recipient = new_email()
    agent = agent_headers(client, admin_headers, scopes)
    refused = client.post(PATH, json=_email(recipient), headers=agent)
    assert refused.status_code == 403, refused.text
    body = refused.json()
    assert body["error"] == "FORBIDDEN" and "/api/messaging/send" in body["nextActions"], body
    assert smtp.mail_for(recipient, timeout=0.5) == []
    assert client.post(PATH, json=INVALID, headers=agent).status_code == 403  # (before the body)


def test_a_failed_send_does_not_hold_up_the_retry(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer, spaced: Any
) -> None:
    recipient = new_email()
    spaced(free_port())  # nothing listens there
    failed = client.post(PATH, json=_email(recipient), headers=admin_headers)
    assert failed.status_code == 502, failed.text
    spaced(smtp.port)
    assert client.post(PATH, json=_email(recipient), headers=admin_headers).status_code == 200
    again = client.post(PATH, json=_email(recipient), headers=admin_headers)
    assert again.status_code == 429  # the interval holds once an email went out


def test_a_send_held_up_by_one_recipient_does_not_use_up_the_others(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer, spaced: Any
) -> None:
    first, second = new_email(), new_email()
    spaced(smtp.port)
    assert client.post(PATH, json=_email(second), headers=admin_headers).status_code == 200
    assert client.post(PATH, json=_email(first, second), headers=admin_headers).status_code == 429
    assert client.post(PATH, json=_email(first), headers=admin_headers).status_code == 200


def test_a_line_break_in_a_header_becomes_a_space_not_a_header(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer
) -> None:
    """nodemailer (InsForge) sends such a subject as one header; it must never start a header of its own."""
    recipient, hidden = new_email(), new_email()
    body = {**_email(recipient), "subject": f"Receipt\r\nBcc: {hidden}", "from": "Shop\nReply-To: x@y.z"}
    response = client.post(PATH, json=body, headers=admin_headers)
    assert response.status_code == 200, response.text
    message = smtp.last_for(recipient).message
    assert message["subject"] == f"Receipt Bcc: {hidden}"
    assert message["bcc"] is None and message["reply-to"] is None
    assert hidden not in smtp.last_for(recipient).to


def test_an_address_named_twice_is_sent_once_under_an_interval(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer, spaced: Any
) -> None:
    """InsForge checks each recipient's interval once: the same address twice (in any case) is one."""
    recipient = new_email()
    spaced(smtp.port)
    response = client.post(PATH, json=_email(recipient, recipient.upper()), headers=admin_headers)
    assert response.status_code == 200, response.text
    assert smtp.last_for(recipient).to


#: What a relay's refusal can carry: its host names, its configuration, a token of its own.
RELAY_INTERNALS = (
    "550 5.7.1 relay denied by mx-internal-7.corp.example (/etc/postfix/main.cf token=r3l4y-s3cr3t)"
)


class RefusingRelay(SmtpServer):
    """A relay that takes the login, then refuses every recipient with a reply full of its internals."""

    async def handle_RCPT(self, *_args: Any) -> str:  # aiosmtpd hook name
        return RELAY_INTERNALS


@pytest.fixture
def configure(client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer) -> Iterator[Any]:
    """`configure(server, **overrides)`: the SMTP settings for `server`, put back as they were after."""

    def put(server: SmtpServer, **overrides: Any) -> None:
        body = smtp_body(server, **overrides)
        assert client.put("/api/auth/smtp-config", json=body, headers=admin_headers).status_code == 200

    yield put
    put(smtp)


def _failure(client: TestClient, admin_headers: dict[str, str]) -> dict[str, Any]:
    response = client.post(PATH, json=_email(new_email()), headers=admin_headers)
    assert response.status_code == 502, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == "EMAIL_SMTP_SEND_FAILED"
    return body


def test_a_refused_login_names_the_reply_code_not_the_login(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer, configure: Any
) -> None:
    configure(smtp, password="not-the-s3cret-password")
    body = _failure(client, admin_headers)
    assert "SMTP reply 535" in body["message"] and "username or password" in body["message"]
    assert "username, password and port" in body["nextActions"]
    said = json.dumps(body)
    for private in ("not-the-s3cret-password", smtp.username, "Authentication credentials invalid", "b'"):
        assert private not in said, body


def test_a_relays_refusal_is_not_passed_on(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer, configure: Any
) -> None:
    relay = RefusingRelay(username=smtp.username, password=smtp.password)
    relay.start()
    try:
        configure(relay)
        body = _failure(client, admin_headers)
    finally:
        relay.stop()
    assert "refused every recipient" in body["message"] and "SMTP reply 550" in body["message"]
    said = json.dumps(body)
    for private in ("mx-internal", "postfix", "r3l4y-s3cr3t", "5.7.1"):
        assert private not in said, body


def test_a_server_that_is_not_there_is_said_plainly(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer, configure: Any
) -> None:
    configure(smtp, port=free_port())  # nothing listens there
    body = _failure(client, admin_headers)
    assert body["message"] == "Failed to send email via SMTP: could not connect to the server."
    assert "host and port" in body["nextActions"]
    assert "Errno" not in body["message"]


class PickyRelay(SmtpServer):
    """A relay that takes the email for every recipient but those in `refusing`, which it refuses with a
    reply full of its internals."""

    refusing: frozenset[str] = frozenset()

    async def handle_RCPT(  # aiosmtpd hook name
        self, _server: Any, _session: Any, envelope: Any, address: str, _options: Any
    ) -> str:
        if address in self.refusing:
            return RELAY_INTERNALS
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def picky(smtp: SmtpServer, configure: Any) -> Iterator[PickyRelay]:
    relay = PickyRelay(username=smtp.username, password=smtp.password)
    relay.start()
    configure(relay, minIntervalSeconds=60)
    yield relay
    relay.stop()


def test_recipients_refused_among_others_are_named_without_the_relays_words(
    client: TestClient, admin_headers: dict[str, str], picky: PickyRelay
) -> None:
    taken, refused, copied, hidden = new_email(), new_email(), new_email(), new_email()
    picky.refusing = frozenset({refused, hidden})
    body = {**_email(taken, refused), "cc": [copied], "bcc": [hidden]}
    response = client.post(PATH, json=body, headers=admin_headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer == {
        "refusedRecipients": [{"email": refused, "smtpCode": 550}, {"email": hidden, "smtpCode": 550}]
    }
    assert sorted(picky.last_for(taken).to) == sorted([taken, copied])
    for private in ("mx-internal", "postfix", "r3l4y-s3cr3t", "5.7.1"):
        assert private not in response.text
    # An email every recipient took answers as InsForge does.
    assert client.post(PATH, json=_email(new_email()), headers=admin_headers).json() == {}


def test_a_refused_recipients_interval_is_not_used_up(
    client: TestClient, admin_headers: dict[str, str], picky: PickyRelay
) -> None:
    taken, refused = new_email(), new_email()
    picky.refusing = frozenset({refused})
    first = client.post(PATH, json=_email(taken, refused), headers=admin_headers)
    assert first.json()["refusedRecipients"] == [{"email": refused, "smtpCode": 550}]
    picky.refusing = frozenset()
    retry = client.post(PATH, json=_email(refused), headers=admin_headers)
    assert retry.status_code == 200 and retry.json() == {}
    assert picky.last_for(refused).to == [refused]
    again = client.post(PATH, json=_email(taken), headers=admin_headers)
    assert again.status_code == 429  # the interval holds for the one the email went to
