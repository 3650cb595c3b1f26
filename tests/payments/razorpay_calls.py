"""What the Razorpay tests send: the keys they set, and Razorpay's signed webhook calls."""

from __future__ import annotations

import json
from typing import Any

import httpx2
from starlette.testclient import TestClient

from tests.support.fake_razorpay import sign

TEST_KEY_ID = "rzp_test_kilnbase0001"
TEST_KEY_SECRET = "razorpay_test_secret_0001"
LIVE_KEY_ID = "rzp_live_kilnbase0002"
LIVE_KEY_SECRET = "razorpay_live_secret_0002"
WEBHOOK_SECRET = "razorpay_webhook_tests"


def configure(
    client: TestClient, admin: dict[str, str], environment: str = "test", **extra: Any
) -> httpx2.Response:
    """Give an environment its keys (and the tests' webhook secret, unless told otherwise)."""
    body: dict[str, Any] = {
        "keyId": TEST_KEY_ID if environment == "test" else LIVE_KEY_ID,
        "keySecret": TEST_KEY_SECRET if environment == "test" else LIVE_KEY_SECRET,
        "webhookSecret": WEBHOOK_SECRET,
        **extra,
    }
    body = {k: v for k, v in body.items() if v is not None}
    return client.put(f"/api/payments/razorpay/{environment}/config", headers=admin, json=body)


def post_event(
    client: TestClient,
    event: dict[str, Any],
    environment: str = "test",
    secret: str = WEBHOOK_SECRET,
    event_id: str | None = None,
) -> httpx2.Response:
    """POST an event to the receiver as Razorpay does: the raw JSON, signed, with its event id."""
    payload = json.dumps(event).encode()
    headers = {"x-razorpay-signature": sign(secret, payload), "content-type": "application/json"}
    if event_id is not None:
        headers["x-razorpay-event-id"] = event_id
    return client.post(f"/api/webhooks/razorpay/{environment}", content=payload, headers=headers)


def event(kind: str, **entities: dict[str, Any]) -> dict[str, Any]:
    """A Razorpay webhook body: `{entity: "event", event, contains, payload: {<kind>: {entity}}}`."""
    return {
        "entity": "event",
        "account_id": "acc_kilnbase",
        "event": kind,
        "contains": list(entities),
        "payload": {name: {"entity": value} for name, value in entities.items()},
        "created_at": 1_767_225_600,
    }
