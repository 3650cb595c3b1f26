"""Messaging test fixtures: the app with a quick worker (short backoff, lease and poll), a real SMTP server on
loopback that refuses the recipients a test names (for a while, or for good), and helpers that wait for a
message to reach a state."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from kilnbase.config import MessagingSettings, Settings
from tests.auth.conftest import smtp_body
from tests.support.app import admin_headers
from tests.support.smtp_server import SmtpServer

SEND = "/api/messaging/send"


class RefusingSmtp(SmtpServer):
    """Takes mail as the tests' SMTP server does, but answers `451` (try later) to the recipients in
    `later`, and `550` (no such user) to those in `never`."""

    later: set[str]
    never: set[str]

    async def handle_RCPT(
        self, _server: Any, _session: Any, envelope: Any, address: str, _options: Any
    ) -> str:
        if address in self.later:
            return "451 4.3.0 mailbox busy on mx-internal.example, try later"
        if address in self.never:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    quick = MessagingSettings(
        max_retries=3, backoff_base_seconds=0.1, max_backoff_seconds=0.4, lease_seconds=2, poll_seconds=0.5
    )
    return Settings(database_url=database_url, data_dir=tmp_path_factory.mktemp("data"), messaging=quick)


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


@pytest.fixture(scope="module")
def smtp(client: TestClient, admin: dict[str, str]) -> Iterator[RefusingSmtp]:
    server = RefusingSmtp(username="mailer", password="smtp-secret-password")
    server.later, server.never = set(), set()
    server.start()
    response = client.put("/api/auth/smtp-config", json=smtp_body(server), headers=admin)
    assert response.status_code == 200, response.text
    yield server
    server.stop()


def new_address(label: str = "someone") -> str:
    return f"{label}-{secrets.token_hex(4)}@example.com"


def email(to: str, **fields: Any) -> dict[str, Any]:
    return {"channel": "email", "to": to, "subject": "Your receipt", "body": "<p>Thanks!</p>", **fields}


def send(client: TestClient, admin: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(SEND, json=body, headers=admin)
    assert response.status_code == 202, response.text
    queued: dict[str, Any] = response.json()
    return queued


def wait_for_status(
    client: TestClient, admin: dict[str, str], message_id: str, status: str, timeout: float = 20
) -> dict[str, Any]:
    """The message, once it has `status`."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/messaging/messages/{message_id}", headers=admin)
        assert response.status_code == 200, response.text
        message: dict[str, Any] = response.json()
        if message["status"] == status:
            return message
        assert time.monotonic() < deadline, message
        time.sleep(0.05)
