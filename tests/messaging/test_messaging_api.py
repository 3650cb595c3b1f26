"""`/api/messaging`'s answers beside delivery: InsForge's 400, 501 and 409 in its words, bounds it lacks, 401
and 403 for callers that are not admins, 404 for unknown ids, 503 without SMTP, the dead-letter page, the
audit trail (no bodies), agent keys (reading with `messaging:read`, sending only with a person's approval),
and the `send-message` MCP tool."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.auth.conftest import smtp_body
from tests.messaging.conftest import SEND, RefusingSmtp, email, new_address, send, wait_for_status
from tests.support.app import agent_headers, anon_headers, mcp_call


def _error(client: TestClient, admin: dict[str, str], body: Any, status: int) -> dict[str, Any]:
    response = client.post(SEND, json=body, headers=admin)
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()
    assert error["nextActions"]
    return error


def _outbox_size(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("select count(*) from messaging.outbox").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("channel", ["sms", "push"])
def test_sms_and_push_are_not_implemented(
    client: TestClient, admin: dict[str, str], smtp: RefusingSmtp, channel: str
) -> None:
    error = _error(client, admin, {"channel": channel, "to": "+15550100"}, 501)
    assert error["error"] == "NOT_IMPLEMENTED"
    assert error["message"] == f"Channel '{channel}' is not supported in Phase 1"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"to": "a@example.com"}, "channel: Required"),
        ({"channel": "fax", "to": "a@example.com"}, "channel: Invalid enum value"),
        ({"channel": "email"}, "to: Required"),
        ({"channel": "email", "to": "a@example.com", "subject": "Hi"}, "Missing required fields: body"),
        ({"channel": "email", "to": "a@example.com", "body": "x"}, "Missing required fields: subject"),
        ({"channel": "email", "to": "a@example.com, b@example.com", "subject": "s", "body": "b"}, "to: one"),
        # (one @, but a mail header reads two recipients, or another one: `root`, and b@example.com)
        ({**email("root,b@example.com")}, "to: one"),
        ({**email("a;b@example.com")}, "to: one"),
        ({**email("group:b@example.com;")}, "to: one"),
        ({**email("a(comment)b@example.com")}, "to: one"),
        ({"channel": "email", "to": "a@example.com", "subject": "s\r\nBcc: x@y.z", "body": "b"}, "subject:"),
        ({"channel": "email", "to": "a@example.com", "subject": "s" * 501, "body": "b"}, "subject:"),
        ({"channel": "email", "to": "a@example.com", "subject": "s", "body": "b" * 262145}, "body:"),
        ({**email("a@example.com"), "idempotencyKey": "k" * 256}, "idempotencyKey:"),
        ({**email("a@example.com"), "metadata": {"blob": "m" * 17000}}, "metadata:"),
        ({**email("a@example.com"), "metadata": [1]}, "metadata: Expected object"),
        ({**email("a@example.com"), "subjet": "typo"}, "subjet: not a field"),
        ({**email("a@example.com"), "body": 5}, "body: Expected string"),
    ],
)
def test_bad_input_is_400_and_queues_nothing(
    client: TestClient, admin: dict[str, str], smtp: RefusingSmtp, database_url: str, body: Any, says: str
) -> None:
    before = _outbox_size(database_url)
    error = _error(client, admin, body, 400)
    assert error["error"] == "INVALID_INPUT" and says in error["message"], error
    assert _outbox_size(database_url) == before


def test_callers_that_are_not_admins_are_refused(client: TestClient, smtp: RefusingSmtp) -> None:
    assert client.post(SEND, json=email(new_address())).status_code == 401
    assert client.post(SEND, json=email(new_address()), headers=anon_headers(client)).status_code == 401
    assert client.get("/api/messaging/dead-letter", headers=anon_headers(client)).status_code == 401
    assert client.get(f"/api/messaging/messages/{uuid.uuid4()}").status_code == 401


def test_an_unknown_message_is_404(client: TestClient, admin: dict[str, str]) -> None:
    for unknown in (str(uuid.uuid4()), "nope"):
        response = client.get(f"/api/messaging/messages/{unknown}", headers=admin)
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "NOT_FOUND"


@pytest.fixture
def smtp_off(client: TestClient, admin: dict[str, str], smtp: RefusingSmtp) -> Iterator[None]:
    off = client.put("/api/auth/smtp-config", json={"enabled": False, "port": 587}, headers=admin)
    assert off.status_code == 200, off.text
    yield
    client.put("/api/auth/smtp-config", json=smtp_body(smtp), headers=admin)


def test_without_smtp_sending_is_503_saying_what_to_configure(
    client: TestClient, admin: dict[str, str], smtp_off: None, database_url: str
) -> None:
    before = _outbox_size(database_url)
    error = _error(client, admin, email(new_address()), 503)
    assert error["error"] == "EMAIL_PROVIDER_NOT_CONFIGURED"
    assert "PUT /api/auth/smtp-config" in error["nextActions"]
    assert _outbox_size(database_url) == before


def test_the_dead_letter_list_is_a_page(
    client: TestClient, admin: dict[str, str], smtp: RefusingSmtp
) -> None:
    for _ in range(2):
        to = new_address("never")
        smtp.never.add(to)
        wait_for_status(client, admin, send(client, admin, email(to))["messageId"], "dead")
    page = client.get("/api/messaging/dead-letter?limit=1", headers=admin)
    assert page.status_code == 206, page.text
    [row] = page.json()
    assert set(row) >= {"id", "channel", "payload", "retryCount", "maxRetries", "errorMessage", "movedAt"}
    assert page.headers["content-range"].startswith("0-0/")
    assert client.get("/api/messaging/dead-letter?limit=0", headers=admin).status_code == 400


def test_sends_are_audited_without_the_message(
    client: TestClient, admin: dict[str, str], smtp: RefusingSmtp, database_url: str
) -> None:
    secret_body = f"<p>reset code {uuid.uuid4()}</p>"
    queued = send(client, admin, email(new_address(), body=secret_body))
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select details::text from system.audit_logs "
            "where action = 'SEND_MESSAGE' and module = 'MESSAGING'"
        ).fetchall()
    mine = [details for (details,) in rows if queued["messageId"] in details]
    assert len(mine) == 1 and secret_body not in mine[0]


def test_agent_keys_read_with_a_scope_and_send_only_once_a_person_approves(
    client: TestClient, admin: dict[str, str], smtp: RefusingSmtp
) -> None:
    to = new_address("agent")
    reader = agent_headers(client, admin, ["messaging:read"])
    assert client.post(SEND, json=email(to), headers=reader).status_code == 403
    assert client.get("/api/messaging/dead-letter", headers=reader).status_code in (200, 206)
    outsider = agent_headers(client, admin, ["database:read"])
    assert client.get("/api/messaging/dead-letter", headers=outsider).status_code == 403

    writer = agent_headers(client, admin, ["messaging:write"])
    held = client.post(SEND, json=email(to), headers=writer)
    assert held.status_code == 202 and held.json()["status"] == "pending_approval", held.text
    over_mcp = json.loads(mcp_call(client, writer, "send-message", {"to": to, "subject": "s", "body": "b"}))
    assert over_mcp["status"] == "pending_approval"
    assert smtp.mail_for(to, timeout=0.5) == []  # nothing goes out on the agent's word alone

    approved = client.post(f"/api/approvals/{held.json()['changeRequestId']}/approve", headers=admin, json={})
    assert approved.status_code == 200, approved.text
    assert smtp.last_for(to).message["subject"] == "Your receipt"


def test_the_send_message_tool_queues_an_email(
    client: TestClient, admin: dict[str, str], smtp: RefusingSmtp
) -> None:
    to = new_address("tool")
    queued = json.loads(
        mcp_call(client, admin, "send-message", {"to": to, "subject": "Via MCP", "body": "<b>hi</b>"})
    )
    assert queued["status"] == "pending"
    assert smtp.last_for(to).message["subject"] == "Via MCP"
    looked_up = json.loads(mcp_call(client, admin, "get-message", {"id": queued["messageId"]}))
    assert looked_up["id"] == queued["messageId"]
    refused = mcp_call(client, admin, "send-message", {"to": "not an address", "subject": "s", "body": "b"})
    assert "INVALID_INPUT" in refused
