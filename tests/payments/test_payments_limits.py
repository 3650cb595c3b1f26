"""The rate limit on checkout and portal sessions (`KILNBASE_PAYMENTS_SESSIONS_PER_MINUTE`), per user: an app
with a limit of 2 of its own."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from kilnbase.config import Settings
from tests.support.app import user_headers
from tests.support.fake_stripe import FakeStripe


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory, stripe: FakeStripe) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        stripe_api_base=stripe.url,
        payments_sessions_per_minute=2,
    )


def test_a_user_past_the_limit_gets_429_and_stripe_is_not_called(
    client: TestClient, stripe: FakeStripe, configured: Callable[..., None]
) -> None:
    configured()
    stripe.add_price("price_limited", "prod_limited", 100)
    body = {
        "mode": "payment",
        "lineItems": [{"priceId": "price_limited"}],
        "successUrl": "https://app.example.com/ok",
        "cancelUrl": "https://app.example.com/no",
    }
    user_id = str(uuid.uuid4())
    headers = user_headers(client, user_id, "limited@example.com")
    path = "/api/payments/stripe/test/checkout-sessions"
    assert [client.post(path, headers=headers, json=body).status_code for _ in range(2)] == [201, 201]
    before = len(stripe.calls)
    refused = client.post(path, headers=headers, json=body)
    assert refused.status_code == 429
    assert refused.json()["error"] == "RATE_LIMITED" and int(refused.headers["retry-after"]) >= 1
    portal = client.post(
        "/api/payments/stripe/test/customer-portal-sessions",
        headers=headers,
        json={"subject": {"type": "user", "id": user_id}},
    )
    assert portal.status_code == 429
    assert len(stripe.calls) == before
    # Another user has a limit of their own.
    other = user_headers(client, str(uuid.uuid4()), "other@example.com")
    assert client.post(path, headers=other, json=body).status_code == 201
