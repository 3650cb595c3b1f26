"""The worker, for real: a queued email reaches a loopback SMTP server and is marked sent; a server that says
"try later" gets the email again after a growing pause, and once out of attempts it moves to the dead-letter
table, whence a retry sends it; a permanent refusal goes there at once; an idempotency key answers the first
message (dead or not) or a 409; a crashed worker's message is taken again once its lease has run out; dead
letters older than their retention are deleted by the worker's retention sweep."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from starlette.testclient import TestClient

from tests.messaging.conftest import SEND, RefusingSmtp, email, new_address, send, wait_for_status
from tests.support.app import services_of


def test_a_queued_email_is_sent_and_marked_sent(
    client: TestClient, admin: dict[str, str], smtp: RefusingSmtp
) -> None:
    to = new_address()
    queued = send(client, admin, email(to, subject="Order 42", body="<p>Shipped</p>", metadata={"order": 42}))
    assert queued["status"] == "pending"
    uuid.UUID(queued["messageId"])

    received = smtp.last_for(to)
    assert received.message["subject"] == "Order 42"
    assert received.html.strip() == "<p>Shipped</p>"
    message = wait_for_status(client, admin, queued["messageId"], "sent")
    assert message["retryCount"] == 0 and message["errorMessage"] is None
    assert message["payload"] == {
        "to": to,
        "subject": "Order 42",
        "body": "<p>Shipped</p>",
        "metadata": {"order": 42},
    }
    assert message["sentAt"] and message["nextAttemptAt"] is None and message["claimedBy"] is None
    assert [attempt["status"] for attempt in message["attempts"]] == ["sent"]
    assert len(smtp.mail_for(to, count=2, timeout=0.5)) == 1  # once


def test_a_busy_server_is_tried_again_then_the_message_is_dead_and_can_be_retried(
    client: TestClient, admin: dict[str, str], smtp: RefusingSmtp
) -> None:
    to = new_address("busy")
    smtp.later.add(to)
    queued = send(client, admin, email(to))
    dead = wait_for_status(client, admin, queued["messageId"], "dead")
    assert dead["retryCount"] == 3 and dead["maxRetries"] == 3
    assert dead["errorMessage"] == (
        "Failed to send email via SMTP: the server refused every recipient (SMTP reply 451)"
    )
    assert "mx-internal" not in str(dead)  # (the server's own words stay out)
    assert [attempt["status"] for attempt in dead["attempts"]] == ["failed", "failed", "failed"]
    listed = client.get("/api/messaging/dead-letter?limit=500", headers=admin)
    assert queued["messageId"] in [row["id"] for row in listed.json()]
    assert smtp.mail_for(to, timeout=0) == []

    smtp.later.discard(to)
    retried = client.post(f"/api/messaging/dead-letter/{queued['messageId']}/retry", headers=admin)
    assert retried.status_code == 202, retried.text
    assert retried.json() == {"messageId": queued["messageId"], "status": "pending"}
    sent = wait_for_status(client, admin, queued["messageId"], "sent")
    assert sent["retryCount"] == 0
    assert smtp.last_for(to).message["subject"] == "Your receipt"
    again = client.post(f"/api/messaging/dead-letter/{queued['messageId']}/retry", headers=admin)
    assert again.status_code == 404  # no longer dead


def test_a_permanent_refusal_is_dead_after_one_attempt(
    client: TestClient, admin: dict[str, str], smtp: RefusingSmtp
) -> None:
    to = new_address("gone")
    smtp.never.add(to)
    queued = send(client, admin, email(to))
    dead = wait_for_status(client, admin, queued["messageId"], "dead")
    assert dead["retryCount"] == 1
    assert dead["errorMessage"].endswith("(SMTP reply 550)")


def test_the_same_idempotency_key_answers_the_first_message(
    client: TestClient, admin: dict[str, str], smtp: RefusingSmtp
) -> None:
    to, key = new_address(), f"order-{uuid.uuid4()}"
    first = send(client, admin, email(to, idempotencyKey=key))
    # The same message (metadata aside, as InsForge compares) is the first one, whatever its status now.
    wait_for_status(client, admin, first["messageId"], "sent")
    replay = send(client, admin, email(to.upper(), idempotencyKey=key, metadata={"try": 2}))
    assert replay == {"messageId": first["messageId"], "status": "sent"}
    assert len(smtp.mail_for(to, count=2, timeout=0.5)) == 1

    conflict = client.post(SEND, json=email(to, idempotencyKey=key, subject="Other"), headers=admin)
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["error"] == "DATABASE_DUPLICATE"
    assert conflict.json()["message"] == "Idempotency key conflict: different payload"


def test_the_idempotency_key_of_a_dead_message_answers_dead(
    client: TestClient, admin: dict[str, str], smtp: RefusingSmtp
) -> None:
    to, key = new_address("never"), f"welcome-{uuid.uuid4()}"
    smtp.never.add(to)
    first = send(client, admin, email(to, idempotencyKey=key))
    wait_for_status(client, admin, first["messageId"], "dead")
    assert send(client, admin, email(to, idempotencyKey=key)) == {
        "messageId": first["messageId"],
        "status": "dead",
    }
    conflict = client.post(SEND, json=email(to, idempotencyKey=key, body="<p>other</p>"), headers=admin)
    assert conflict.status_code == 409


def _crashed_claim(database_url: str, to: str, lease_seconds: float) -> str:
    """A message as a worker that crashed while sending leaves it: claimed, its lease running out."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "insert into messaging.outbox (channel, status, payload, max_retries, claimed_by, claimed_at, "
            "lease_expires_at, claim_token, next_attempt_at) values ('email', 'claimed', %s, 3, "
            "'worker-crashed', now(), now() + make_interval(secs => %s), gen_random_uuid(), now()) "
            "returning id::text",
            (Jsonb({"to": to, "subject": "Left behind", "body": "<p>hi</p>"}), lease_seconds),
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_crashed_workers_message_is_sent_once_its_lease_runs_out(
    client: TestClient, admin: dict[str, str], smtp: RefusingSmtp, database_url: str
) -> None:
    to = new_address("orphan")
    message_id = _crashed_claim(database_url, to, 1.5)
    time.sleep(0.5)
    held: dict[str, Any] = client.get(f"/api/messaging/messages/{message_id}", headers=admin).json()
    assert held["status"] == "claimed" and held["claimedBy"] == "worker-crashed"  # (its lease still runs)
    assert smtp.mail_for(to, timeout=0) == []

    sent = wait_for_status(client, admin, message_id, "sent")
    assert sent["retryCount"] == 1
    assert sent["errorMessage"].startswith("Lease expired")
    failed, delivered = sent["attempts"]
    assert failed["status"] == "failed" and failed["workerId"] == "worker-crashed"
    assert delivered["status"] == "sent" and delivered["workerId"] != "worker-crashed"
    assert smtp.last_for(to).message["subject"] == "Left behind"


def test_retrying_what_is_not_dead_is_404(client: TestClient, admin: dict[str, str]) -> None:
    for unknown in (str(uuid.uuid4()), "not-a-uuid"):
        response = client.post(f"/api/messaging/dead-letter/{unknown}/retry", headers=admin)
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "NOT_FOUND"


def test_dead_letters_past_their_retention_are_pruned_and_younger_ones_stay(
    client: TestClient, admin: dict[str, str], smtp: RefusingSmtp, database_url: str
) -> None:
    """`dead_letter_retention_days` (30 here, the default) counts from when a message moved to the
    dead-letter table; the sweep the worker runs every `retention_sweep_seconds` deletes what is older."""
    assert services_of(client).core.settings.messaging.dead_letter_retention_days == 30
    old_to, young_to = new_address("old"), new_address("young")
    smtp.never.update({old_to, young_to})
    old = send(client, admin, email(old_to))["messageId"]
    young = send(client, admin, email(young_to))["messageId"]
    for message_id in (old, young):
        wait_for_status(client, admin, message_id, "dead")
    with psycopg.connect(database_url) as conn:
        for message_id, days in ((old, 31), (young, 29)):
            conn.execute(
                "update messaging.dead_letter set moved_at = now() - make_interval(days => %s) where id = %s",
                (days, message_id),
            )
    portal = client.portal
    assert portal is not None
    assert portal.call(services_of(client).message_runner.prune) >= 1
    gone = client.get(f"/api/messaging/messages/{old}", headers=admin)
    assert gone.status_code == 404 and gone.json()["error"] == "NOT_FOUND", gone.text
    assert client.post(f"/api/messaging/dead-letter/{old}/retry", headers=admin).status_code == 404
    assert client.get(f"/api/messaging/messages/{young}", headers=admin).json()["status"] == "dead"
    listed = client.get("/api/messaging/dead-letter?limit=500", headers=admin).json()
    assert young in [row["id"] for row in listed] and old not in [row["id"] for row in listed]
