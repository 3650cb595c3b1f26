"""What the payments tests send: the keys they set, and Stripe's signed webhook calls."""

from __future__ import annotations

import json
from typing import Any

import httpx2
from starlette.testclient import TestClient

from tests.support.fake_stripe import sign

TEST_KEY = "sk_test_kilnbase_payments_0001"
LIVE_KEY = "sk_live_kilnbase_payments_0002"
WEBHOOK_SECRET = "whsec_kilnbase_tests"


def post_event(
    client: TestClient,
    item: dict[str, Any],
    environment: str = "test",
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
) -> httpx2.Response:
    """POST an event to the receiver as Stripe does: the raw JSON, signed."""
    payload = json.dumps(item).encode()
    return client.post(
        f"/api/webhooks/stripe/{environment}",
        content=payload,
        headers={"stripe-signature": sign(secret, payload, timestamp), "content-type": "application/json"},
    )
