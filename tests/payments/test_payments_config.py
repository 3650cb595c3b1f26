"""The Stripe keys: set (checked with Stripe, stored encrypted, a webhook endpoint made), answered masked,
removed; refused to agent keys and to anyone but the admin; status per environment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.payments.stripe_calls import LIVE_KEY, TEST_KEY, WEBHOOK_SECRET, post_event
from tests.support.app import agent_headers, anon_headers
from tests.support.fake_stripe import FakeStripe, event
from tests.support.side_sql import Sql

CONFIG = "/api/payments/stripe/live/config"


def _stored(sql: Sql, environment: str) -> dict[str, Any] | None:
    rows = sql(
        "select * from payments.provider_secrets where provider = 'stripe' and environment = %s", environment
    )
    return rows[0] if rows else None


def test_setting_a_key_checks_it_with_stripe_stores_it_encrypted_and_answers_it_masked(
    client: TestClient,
    admin: dict[str, str],
    stripe: FakeStripe,
    unconfigured: Callable[[str], None],
    sql: Sql,
) -> None:
    unconfigured("live")
    stripe.refuse_webhook_endpoints = False
    answer = client.put(CONFIG, headers=admin, json={"secretKey": LIVE_KEY})
    assert answer.status_code == 200, answer.text
    assert {"environment": "live", "value": "sk_live_****0002"} in answer.json()["keys"]
    assert LIVE_KEY not in answer.text
    # Stripe was asked who the key belongs to, with the key, and given Kilnbase's endpoint for its events.
    account = stripe.calls_to("GET", "/v1/account")[-1]
    assert account.headers["authorization"] == f"Bearer {LIVE_KEY}"
    created = stripe.calls_to("POST", "/v1/webhook_endpoints")[-1]
    assert created.form["url"].endswith("/api/webhooks/stripe/live")
    assert created.form["enabled_events[0]"] == "checkout.session.completed"
    assert created.form["metadata[kilnbase_environment]"] == "live"
    stored = _stored(sql, "live")
    assert stored is not None and LIVE_KEY not in str(stored["secret_key_ciphertext"])
    assert stored["webhook_secret_ciphertext"] is not None
    listed = client.get("/api/payments/stripe/config", headers=admin)
    assert listed.status_code == 200 and LIVE_KEY not in listed.text
    assert {"environment": "live", "value": "sk_live_****0002"} in listed.json()["keys"]
    status = client.get("/api/payments/stripe/status", headers=admin).json()["connections"]
    live = next(c for c in status if c["environment"] == "live")
    assert live["status"] == "connected" and live["accountId"] == "acct_default"
    assert live["maskedKey"] == "sk_live_****0002" and live["webhookEndpointId"].startswith("we_")
    assert live["accountLivemode"] is True and live["lastSyncStatus"] == "succeeded"


def test_a_key_stripe_refuses_is_a_400_that_changes_nothing(
    client: TestClient,
    admin: dict[str, str],
    stripe: FakeStripe,
    unconfigured: Callable[[str], None],
    sql: Sql,
) -> None:
    unconfigured("live")
    answer = client.put(CONFIG, headers=admin, json={"secretKey": "sk_live_bad_key_1234"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "PAYMENT_CONFIG_INVALID"
    assert answer.json()["message"].startswith("Invalid API Key provided")
    assert "sk_live_bad_key_1234" not in answer.text
    assert _stored(sql, "live") is None


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            {"secretKey": TEST_KEY},
            "PAYMENT_CONFIG_INVALID",
            "STRIPE_LIVE_SECRET_KEY must start with sk_live_",
        ),
        ({}, "INVALID_INPUT", "secretKey: Required"),
        ({"secretKey": "  "}, "INVALID_INPUT", "secretKey: a non-empty string"),
        ({"secretKey": LIVE_KEY, "extra": 1}, "INVALID_INPUT", "extra: not a field of this request"),
        (
            {"secretKey": LIVE_KEY, "webhookSecret": "nope"},
            "PAYMENT_CONFIG_INVALID",
            "STRIPE_LIVE_WEBHOOK_SECRET must start with whsec_",
        ),
    ],
)
def test_a_bad_config_body_is_a_400_and_stripe_is_not_called(
    client: TestClient,
    admin: dict[str, str],
    stripe: FakeStripe,
    unconfigured: Callable[[str], None],
    sql: Sql,
    body: dict[str, object],
    code: str,
    message: str,
) -> None:
    unconfigured("live")
    before = len(stripe.calls)
    answer = client.put(CONFIG, headers=admin, json=body)
    assert answer.status_code == 400
    assert answer.json()["error"] == code and answer.json()["message"] == message
    assert len(stripe.calls) == before
    assert _stored(sql, "live") is None


def test_removing_a_key_removes_its_endpoint_and_a_second_removal_is_404(
    client: TestClient,
    admin: dict[str, str],
    stripe: FakeStripe,
    unconfigured: Callable[[str], None],
    sql: Sql,
) -> None:
    unconfigured("live")
    stripe.refuse_webhook_endpoints = False
    assert client.put(CONFIG, headers=admin, json={"secretKey": LIVE_KEY}).status_code == 200
    endpoint = stripe.calls_to("POST", "/v1/webhook_endpoints")[-1]
    assert any(e["url"] == endpoint.form["url"] for e in stripe.endpoints.values())
    removed = client.delete(CONFIG, headers=admin)
    assert removed.status_code == 200
    assert {"environment": "live", "value": None} in removed.json()["keys"]
    assert not any(e["url"] == endpoint.form["url"] for e in stripe.endpoints.values())
    status = client.get("/api/payments/stripe/status", headers=admin).json()["connections"]
    assert next(c for c in status if c["environment"] == "live")["status"] == "unconfigured"
    again = client.delete(CONFIG, headers=admin)
    assert again.status_code == 404
    assert again.json()["error"] == "PAYMENT_CONFIG_NOT_FOUND"


def test_a_key_is_set_even_when_stripe_cannot_reach_the_server_for_an_endpoint(
    client: TestClient,
    admin: dict[str, str],
    stripe: FakeStripe,
    unconfigured: Callable[[str], None],
    sql: Sql,
) -> None:
    unconfigured("live")
    stripe.refuse_webhook_endpoints = True
    try:
        answer = client.put(CONFIG, headers=admin, json={"secretKey": LIVE_KEY})
        setup = client.post("/api/payments/stripe/live/webhook", headers=admin)
    finally:
        stripe.refuse_webhook_endpoints = False
    assert answer.status_code == 200
    status = client.get("/api/payments/stripe/status", headers=admin).json()["connections"]
    assert next(c for c in status if c["environment"] == "live")["webhookEndpointId"] is None
    # Asked for explicitly, the endpoint's refusal is Stripe's 400.
    assert setup.status_code == 400 and setup.json()["error"] == "UPSTREAM_FAILURE"
    made = client.post("/api/payments/stripe/live/webhook", headers=admin)
    assert made.status_code == 200
    assert made.json()["connection"]["webhookEndpointId"].startswith("we_")


@pytest.mark.parametrize("scopes", [["payments:write"], ["*:write"]])
def test_agent_keys_may_not_set_read_or_remove_the_keys(
    client: TestClient, admin: dict[str, str], stripe: FakeStripe, scopes: list[str]
) -> None:
    agent = agent_headers(client, admin, scopes)
    before = len(stripe.calls)
    for answer in (
        client.put(CONFIG, headers=agent, json={"secretKey": LIVE_KEY}),
        client.get("/api/payments/stripe/config", headers=agent),
        client.delete(CONFIG, headers=agent),
    ):
        assert answer.status_code == 403, answer.text
        assert answer.json()["message"].startswith("Agent keys may not set, read or remove the Stripe keys")
    assert len(stripe.calls) == before
    # What does not reveal a key is theirs to read.
    assert client.get("/api/payments/stripe/status", headers=agent).status_code == 200


def test_users_and_strangers_reach_none_of_the_admin_routes(
    client: TestClient, user: tuple[str, dict[str, str]]
) -> None:
    _, headers = user
    for path in (
        "/api/payments/stripe/config",
        "/api/payments/stripe/status",
        "/api/payments/stripe/test/catalog",
    ):
        assert client.get(path, headers=headers).status_code == 403
        assert client.get(path, headers=anon_headers(client)).status_code == 401
        assert client.get(path).status_code == 401
    assert client.put(CONFIG, headers=headers, json={"secretKey": LIVE_KEY}).status_code == 403
    assert client.put(CONFIG, json={"secretKey": LIVE_KEY}).status_code == 401


def test_an_unknown_environment_is_a_400_and_other_providers_say_they_are_not_here(
    client: TestClient, admin: dict[str, str]
) -> None:
    answer = client.put("/api/payments/stripe/prod/config", headers=admin, json={"secretKey": LIVE_KEY})
    assert answer.status_code == 400
    assert (
        answer.json()["message"]
        == "environment: Invalid enum value. Expected 'test' | 'live', received 'prod'"
    )
    for path in (
        "/api/payments/paystack/config",
        "/api/payments/paystack/test/orders",
        "/api/webhooks/paystack/test",
    ):
        refused = client.post(path, headers=admin, json={})
        assert refused.status_code == 501
        assert refused.json()["error"] == "PAYMENT_PROVIDER_NOT_SUPPORTED"
        assert "Stripe and Razorpay" in refused.json()["message"]


def test_key_changes_and_refusals_are_audited_with_the_key_masked(
    client: TestClient,
    admin: dict[str, str],
    unconfigured: Callable[[str], None],
    sql: Sql,
) -> None:
    unconfigured("live")
    agent = agent_headers(client, admin, ["payments:write"], name="auditor")
    assert client.put(CONFIG, headers=agent, json={"secretKey": LIVE_KEY}).status_code == 403
    assert client.put(CONFIG, headers=admin, json={"secretKey": LIVE_KEY}).status_code == 200
    entries = sql(
        "select actor, outcome, details from system.audit_logs where module = 'PAYMENTS' "
        "and action = 'SET_STRIPE_CONFIG' order by created_at desc limit 2"
    )
    assert [(e["outcome"], e["actor"].startswith("agent:auditor")) for e in entries] == [
        ("success", False),
        ("refused", True),
    ]
    assert entries[0]["details"]["key"] == "sk_live_****0002"
    assert LIVE_KEY not in str(sql("select details from system.audit_logs where module = 'PAYMENTS'"))


def test_a_key_of_another_stripe_account_clears_what_was_recorded_for_the_first(
    client: TestClient,
    admin: dict[str, str],
    stripe: FakeStripe,
    unconfigured: Callable[[str], None],
    sql: Sql,
) -> None:
    unconfigured("live")
    first = {"secretKey": LIVE_KEY, "webhookSecret": WEBHOOK_SECRET}
    assert client.put(CONFIG, headers=admin, json=first).status_code == 200
    invoice = {"id": "in_first_account", "object": "invoice", "customer": "cus_1", "amount_paid": 100}
    paid = post_event(client, event("invoice.paid", invoice, "evt_first_account"), environment="live")
    assert paid.status_code == 200
    customer = {"id": "cus_first_account", "object": "customer", "email": "first@example.com"}
    created = post_event(client, event("customer.created", customer, "evt_customer"), environment="live")
    assert created.status_code == 200
    recorded = (
        "select count(*) as n from payments.transactions where provider = 'stripe' and environment = 'live'"
    )
    assert sql(recorded)[0]["n"] == 1
    customers = "/api/payments/stripe/live/customers"
    listed = client.get(customers, headers=admin).json()["customers"]
    assert [c["email"] for c in listed] == ["first@example.com"]
    # The same account again (a rolled key) keeps it; another account's key clears it.
    stripe.accounts["sk_live_rolled_key_0003"] = "acct_default"
    assert client.put(CONFIG, headers=admin, json={"secretKey": "sk_live_rolled_key_0003"}).status_code == 200
    assert sql(recorded)[0]["n"] == 1
    stripe.accounts["sk_live_other_account_9999"] = "acct_other"
    assert (
        client.put(CONFIG, headers=admin, json={"secretKey": "sk_live_other_account_9999"}).status_code == 200
    )
    assert sql(recorded)[0]["n"] == 0
    events = (
        "select count(*) as n from payments.webhook_events where provider = 'stripe' and environment = 'live'"
    )
    assert sql(events)[0]["n"] == 0
    assert client.get(customers, headers=admin).json() == {"customers": []}
    status = client.get("/api/payments/stripe/status", headers=admin).json()["connections"]
    assert next(c for c in status if c["environment"] == "live")["accountId"] == "acct_other"
