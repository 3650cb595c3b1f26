"""Stripe's webhook receiver: the signature checked before anything else (good, forged, old, missing), each
event recorded once (a retry changes nothing), and what the events make of the payment history and the
subscriptions, as the admin lists them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.payments.stripe_calls import post_event
from tests.support.fake_stripe import event
from tests.support.side_sql import Sql

TRANSACTIONS = "/api/payments/stripe/test/transactions"
SUBSCRIPTIONS = "/api/payments/stripe/test/subscriptions"


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _events(sql: Sql) -> int:
    return int(sql("select count(*) as n from payments.webhook_events")[0]["n"])


def _paid_checkout(subject_id: str, payment_intent: str, customer: str) -> dict[str, Any]:
    return {
        "id": _id("cs"),
        "object": "checkout.session",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "customer": customer,
        "payment_intent": payment_intent,
        "amount_total": 3000,
        "currency": "usd",
        "created": int(time.time()),
        "customer_details": {"email": "buyer@example.com"},
        "metadata": {"insforge_subject_type": "user", "insforge_subject_id": subject_id},
    }


def test_a_signed_checkout_completion_is_recorded_and_lands_in_the_payment_history(
    client: TestClient, admin: dict[str, str], configured: Callable[..., None]
) -> None:
    configured()
    subject, intent, customer = str(uuid.uuid4()), _id("pi"), _id("cus")
    event_id = _id("evt")
    answer = post_event(
        client, event("checkout.session.completed", _paid_checkout(subject, intent, customer), event_id)
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["received"] is True and body["handled"] is True
    assert body["event"]["eventId"] == event_id and body["event"]["processingStatus"] == "processed"
    assert body["event"]["objectType"] == "checkout.session" and body["event"]["attemptCount"] == 1
    listed = client.get(TRANSACTIONS, headers=admin, params={"subjectType": "user", "subjectId": subject})
    assert listed.status_code == 200
    [payment] = listed.json()["transactions"]
    assert payment["type"] == "one_time_payment" and payment["status"] == "succeeded"
    assert payment["amount"] == 3000 and payment["currency"] == "usd" and payment["paidAt"] is not None
    assert payment["providerReferenceType"] == "payment_intent" and payment["providerReferenceId"] == intent
    assert (
        payment["providerCustomerId"] == customer and payment["customerEmailSnapshot"] == "buyer@example.com"
    )
    # A refund of that payment's charge updates the same row.
    charge = {
        "id": _id("ch"),
        "object": "charge",
        "payment_intent": intent,
        "amount_refunded": 3000,
        "refunded": True,
    }
    assert post_event(client, event("charge.refunded", charge, _id("evt"))).json()["handled"] is True
    [refunded] = client.get(
        TRANSACTIONS, headers=admin, params={"subjectType": "user", "subjectId": subject}
    ).json()["transactions"]
    assert refunded["status"] == "refunded" and refunded["amountRefunded"] == 3000


def test_a_retried_event_is_answered_without_being_applied_again(
    client: TestClient, admin: dict[str, str], configured: Callable[..., None], sql: Sql
) -> None:
    configured()
    subject, intent = str(uuid.uuid4()), _id("pi")
    completed = event("checkout.session.completed", _paid_checkout(subject, intent, _id("cus")), _id("evt"))
    assert post_event(client, completed).json()["handled"] is True
    again = post_event(client, completed)
    assert again.status_code == 200
    assert again.json()["handled"] is False
    assert (
        again.json()["event"]["attemptCount"] == 2
        and again.json()["event"]["processingStatus"] == "processed"
    )
    rows = sql("select count(*) as n from payments.transactions where provider_object_id = %s", intent)
    assert rows[0]["n"] == 1


def test_a_forged_or_old_signature_is_refused_before_anything_is_recorded(
    client: TestClient, configured: Callable[..., None], sql: Sql
) -> None:
    configured()
    item = event(
        "checkout.session.completed", _paid_checkout(str(uuid.uuid4()), _id("pi"), _id("cus")), _id("evt")
    )
    before = _events(sql)
    forged = post_event(client, item, secret="whsec_not_the_secret")
    assert forged.status_code == 400
    assert forged.json()["error"] == "INVALID_INPUT"
    assert forged.json()["message"] == "No signatures found matching the expected signature for payload"
    old = post_event(client, item, timestamp=int(time.time()) - 301)
    assert old.status_code == 400 and old.json()["message"] == "Timestamp outside the tolerance zone"
    missing = client.post("/api/webhooks/stripe/test", content=b"{}")
    assert missing.status_code == 401 and missing.json()["message"] == "Missing stripe-signature header"
    garbled = client.post("/api/webhooks/stripe/test", content=b"{}", headers={"stripe-signature": "v0=abc"})
    assert garbled.status_code == 400
    assert garbled.json()["message"] == "Unable to extract timestamp and signatures from header"
    # A signature that is not ASCII (a header arrives as Latin-1): a mismatch, not a 500.
    latin = client.post(
        "/api/webhooks/stripe/test",
        content=b"{}",
        headers={b"stripe-signature": f"t={int(time.time())},v1=\u00e9\u00e9".encode("latin-1")},
    )
    assert latin.status_code == 400
    assert latin.json()["message"] == "No signatures found matching the expected signature for payload"
    assert _events(sql) == before


def test_a_signed_body_that_is_no_event_an_unknown_environment_and_no_secret_are_refused(
    client: TestClient, configured: Callable[..., None], unconfigured: Callable[[str], None], sql: Sql
) -> None:
    configured()
    before = _events(sql)
    not_an_event = post_event(client, {"hello": "stripe"})
    assert not_an_event.status_code == 400
    assert post_event(client, {"id": "evt_1", "type": "x"}, environment="prod").status_code == 400
    unconfigured("live")
    no_secret = post_event(client, event("invoice.paid", {"id": "in_1"}, _id("evt")), environment="live")
    assert no_secret.status_code == 503
    assert no_secret.json()["message"] == "STRIPE_LIVE_WEBHOOK_SECRET is not configured"
    assert _events(sql) == before


def test_an_event_kilnbase_does_not_read_is_recorded_as_ignored(
    client: TestClient, configured: Callable[..., None]
) -> None:
    configured()
    answer = post_event(
        client, event("customer.tax_id.created", {"id": _id("txi"), "object": "tax_id"}, _id("evt"))
    )
    assert answer.status_code == 200
    assert answer.json()["handled"] is False and answer.json()["event"]["processingStatus"] == "ignored"


def test_subscription_events_keep_the_subscriptions_and_invoices_their_history(
    client: TestClient, admin: dict[str, str], configured: Callable[..., None]
) -> None:
    configured()
    team, customer, subscription = f"team-{uuid.uuid4().hex[:6]}", _id("cus"), _id("sub")
    now = int(time.time())
    item = {
        "id": subscription,
        "object": "subscription",
        "customer": customer,
        "status": "active",
        "cancel_at_period_end": False,
        "metadata": {"insforge_subject_type": "team", "insforge_subject_id": team},
        "items": {
            "data": [
                {
                    "id": _id("si"),
                    "price": {"id": "price_pro", "product": "prod_pro"},
                    "quantity": 3,
                    "current_period_start": now,
                    "current_period_end": now + 30 * 86400,
                }
            ]
        },
    }
    assert (
        post_event(client, event("customer.subscription.created", item, _id("evt"))).json()["handled"] is True
    )
    query = {"subjectType": "team", "subjectId": team}
    [listed] = client.get(SUBSCRIPTIONS, headers=admin, params=query).json()["subscriptions"]
    assert listed["subscriptionId"] == subscription and listed["status"] == "active"
    assert listed["customerId"] == customer and listed["currentPeriodEnd"] is not None
    assert [(i["priceId"], i["productId"], i["quantity"]) for i in listed["items"]] == [
        ("price_pro", "prod_pro", 3)
    ]
    invoice = {
        "id": _id("in"),
        "object": "invoice",
        "customer": customer,
        "amount_paid": 4500,
        "amount_due": 4500,
        "currency": "usd",
        "created": now,
        "parent": {"subscription_details": {"subscription": subscription, "metadata": {}}},
    }
    # The invoice names no subject: the customer's, recorded from the subscription, is used.
    assert post_event(client, event("invoice.paid", invoice, _id("evt"))).json()["handled"] is True
    [paid] = client.get(TRANSACTIONS, headers=admin, params=query).json()["transactions"]
    assert paid["type"] == "subscription_invoice" and paid["status"] == "succeeded" and paid["amount"] == 4500
    canceled = {**item, "status": "canceled", "canceled_at": now, "items": {"data": []}}
    assert post_event(client, event("customer.subscription.deleted", canceled, _id("evt"))).status_code == 200
    [after] = client.get(SUBSCRIPTIONS, headers=admin, params=query).json()["subscriptions"]
    assert after["status"] == "canceled" and after["canceledAt"] is not None and after["items"] == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"subjectType": "team"}, "subjectType and subjectId must be provided together"),
        ({"limit": "0"}, "limit: an integer from 1 to 100"),
        ({"limit": "ten"}, "limit: an integer from 1 to 100"),
        ({"cursor": "x"}, "cursor: not a field of this request"),
    ],
)
@pytest.mark.parametrize("path", [TRANSACTIONS, SUBSCRIPTIONS])
def test_a_bad_list_query_is_a_400(
    client: TestClient, admin: dict[str, str], path: str, params: dict[str, str], message: str
) -> None:
    answer = client.get(path, headers=admin, params=params)
    assert answer.status_code == 400
    assert answer.json()["message"] == message


@pytest.mark.parametrize("when", [10**20, 1e18, 253_402_300_800])
def test_a_time_out_of_any_calendar_is_read_as_no_time_not_a_500(
    client: TestClient, configured: Callable[..., None], sql: Sql, when: float
) -> None:
    configured()
    subscription = {
        "id": _id("sub"),
        "object": "subscription",
        "status": "active",
        "current_period_end": when,
    }
    updated = event("customer.subscription.updated", subscription, _id("evt"))
    updated["created"] = when
    answer = post_event(client, updated)
    assert answer.status_code == 200, answer.text
    assert answer.json()["handled"] is True
    rows = sql(
        "select status, current_period_end from payments.stripe_subscriptions where subscription_id = %s",
        subscription["id"],
    )
    assert rows == [{"status": "active", "current_period_end": None}]


def test_a_subscription_keeps_its_billing_subject_when_a_later_event_names_none(
    client: TestClient, admin: dict[str, str], configured: Callable[..., None]
) -> None:
    configured()
    team, subscription = f"team-{uuid.uuid4().hex[:6]}", _id("sub")
    item = {
        "id": subscription,
        "object": "subscription",
        "customer": _id("cus"),
        "status": "active",
        "metadata": {"insforge_subject_type": "team", "insforge_subject_id": team},
        "items": {"data": []},
    }
    assert post_event(client, event("customer.subscription.created", item, _id("evt"))).status_code == 200
    # Moved to a customer Kilnbase has never seen, its metadata cleared: nothing names a subject now.
    moved = {**item, "customer": _id("cus"), "status": "past_due", "metadata": {}}
    assert post_event(client, event("customer.subscription.updated", moved, _id("evt"))).status_code == 200
    query = {"subjectType": "team", "subjectId": team}
    listed = client.get(SUBSCRIPTIONS, headers=admin, params=query).json()["subscriptions"]
    assert [(s["subscriptionId"], s["status"], s["customerId"]) for s in listed] == [
        (subscription, "past_due", moved["customer"])
    ]
    assert (listed[0]["subjectType"], listed[0]["subjectId"]) == ("team", team)
