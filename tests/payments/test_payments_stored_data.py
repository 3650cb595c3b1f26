"""Stripe's side of what a server must survive in its stored payments data: a key the project's encryption
key can no longer open (a clear 400/503 telling the admin to set it again, not a 500), and a signed event
holding a value the tables cannot hold (recorded failed and acknowledged, not refused for ever)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

from tests.payments.stripe_calls import post_event
from tests.support.fake_stripe import event
from tests.support.side_sql import Sql

CHECKOUT = "/api/payments/stripe/test/checkout-sessions"


def _unreadable(sql: Sql, column: str) -> None:
    """A ciphertext of the right form that no box opens (what a replaced encryption key leaves)."""
    sql(
        f"update payments.provider_secrets set {column} = 'v1:' || repeat('QUFB', 20) "
        "where provider = 'stripe' and environment = 'test'"
    )


def test_a_key_that_no_longer_decrypts_asks_the_admin_to_set_it_again(
    client: TestClient, admin: dict[str, str], configured: Callable[..., None], sql: Sql
) -> None:
    configured()
    _unreadable(sql, "secret_key_ciphertext")
    body = {
        "mode": "payment",
        "lineItems": [{"priceId": "price_1"}],
        "successUrl": "https://app.example.com/ok",
        "cancelUrl": "https://app.example.com/no",
    }
    answer = client.post(CHECKOUT, headers=admin, json=body)
    assert answer.status_code == 400
    assert answer.json()["error"] == "PAYMENT_CONFIG_INVALID"
    assert answer.json()["message"].startswith("The stored STRIPE_TEST_SECRET_KEY can no longer be decrypted")
    assert "PUT /api/payments/stripe/test/config" in answer.json()["nextActions"]
    assert client.post("/api/payments/stripe/test/sync", headers=admin).status_code == 400
    # Removing it still works, and setting it again mends it.
    assert client.delete("/api/payments/stripe/test/config", headers=admin).status_code == 200
    configured()
    assert client.post("/api/payments/stripe/test/sync", headers=admin).status_code == 200


def test_a_webhook_secret_that_no_longer_decrypts_is_a_503_stripe_retries(
    client: TestClient, configured: Callable[..., None], sql: Sql
) -> None:
    configured()
    _unreadable(sql, "webhook_secret_ciphertext")
    answer = post_event(
        client, event("invoice.paid", {"id": "in_x", "object": "invoice"}, "evt_undecryptable")
    )
    assert answer.status_code == 503
    assert answer.json()["message"].startswith(
        "The stored STRIPE_TEST_WEBHOOK_SECRET can no longer be decrypted"
    )
    assert sql("select * from payments.webhook_events where provider_event_id = 'evt_undecryptable'") == []


def test_an_event_with_an_amount_past_bigint_is_recorded_failed_and_acknowledged(
    client: TestClient, configured: Callable[..., None], sql: Sql
) -> None:
    configured()
    invoice = {"id": "in_huge_amount", "object": "invoice", "customer": "cus_1", "amount_paid": 2**63}
    for attempt in (1, 2):
        answer = post_event(client, event("invoice.paid", invoice, "evt_huge_amount"))
        assert answer.status_code == 200, answer.text
        assert answer.json()["handled"] is False
        assert answer.json()["event"]["processingStatus"] == "failed"
        assert answer.json()["event"]["attemptCount"] == attempt
        assert "bigint out of range" in answer.json()["event"]["lastError"]
    assert sql("select * from payments.transactions where provider_object_id = 'in_huge_amount'") == []


def test_a_signed_event_with_a_nul_character_is_recorded_with_the_replacement_character(
    client: TestClient, configured: Callable[..., None], sql: Sql
) -> None:
    configured()
    invoice = {
        "id": "in_nul",
        "object": "invoice",
        "customer": "cus_1",
        "amount_paid": 100,
        "description": "a\u0000b",
    }
    answer = post_event(client, event("invoice.paid", invoice, "evt_nul_stripe"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["event"]["processingStatus"] == "processed"
    assert sql("select description from payments.transactions where provider_object_id = 'in_nul'") == [
        {"description": "a\ufffdb"}
    ]
