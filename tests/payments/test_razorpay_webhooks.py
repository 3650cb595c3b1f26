"""Razorpay's webhook receiver: the signature (good, wrong, missing), an event applied once however often
Razorpay retries it, and what each kind of event changes (payment history, orders, subscriptions, refunds)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.payments.razorpay_calls import WEBHOOK_SECRET, configure, event, post_event
from tests.support.fake_razorpay import sign, subscription_entity
from tests.support.side_sql import Sql

RECEIVER = "/api/webhooks/razorpay/test"


@pytest.fixture
def keys(client: TestClient, admin: dict[str, str]) -> None:
    assert configure(client, admin, "test").status_code == 200


def _payment(payment_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": payment_id,
        "entity": "payment",
        "amount": 50000,
        "currency": "INR",
        "status": "captured",
        "captured": True,
        "order_id": None,
        "amount_refunded": 0,
        "refund_status": None,
        "email": "asha@example.com",
        "customer_id": None,
        "notes": {},
        "created_at": 1_767_225_600,
        **extra,
    }


def _events(sql: Sql) -> int:
    return int(sql("select count(*) as n from payments.webhook_events where provider = 'razorpay'")[0]["n"])


def _transaction(sql: Sql, object_id: str) -> dict[str, Any]:
    rows = sql(
        "select type, status, amount, amount_refunded, subject_type, subject_id from payments.transactions "
        "where provider = 'razorpay' and provider_object_id = %s",
        object_id,
    )
    assert len(rows) == 1, rows
    return rows[0]


def test_a_signed_event_is_applied_once_however_often_razorpay_sends_it(
    client: TestClient, admin: dict[str, str], keys: None, sql: Sql
) -> None:
    body = event(
        "payment.captured",
        payment=_payment(
            "pay_once0001", notes={"insforge_subject_type": "user", "insforge_subject_id": "u1"}
        ),
    )
    first = post_event(client, body, event_id="evt_once0001")
    assert first.status_code == 200, first.text
    assert first.json() == {"received": True, "handled": True}
    assert _transaction(sql, "pay_once0001") == {
        "type": "one_time_payment",
        "status": "succeeded",
        "amount": 50000,
        "amount_refunded": 0,
        "subject_type": "user",
        "subject_id": "u1",
    }
    again = post_event(client, body, event_id="evt_once0001")
    assert again.status_code == 200 and again.json() == {"received": True, "handled": False}
    row = sql(
        "select processing_status, attempt_count, event_type from payments.webhook_events "
        "where provider = 'razorpay' and provider_event_id = 'evt_once0001'"
    )
    assert row == [{"processing_status": "processed", "attempt_count": 2, "event_type": "payment.captured"}]
    listed = client.get(
        "/api/payments/razorpay/test/transactions",
        headers=admin,
        params={"subjectType": "user", "subjectId": "u1"},
    )
    assert listed.status_code == 200
    (shown,) = [t for t in listed.json()["transactions"] if t["providerReferenceId"] == "pay_once0001"]
    assert shown["provider"] == "razorpay" and shown["status"] == "succeeded" and shown["currency"] == "inr"
    # Stripe's history does not show it.
    stripe = client.get("/api/payments/stripe/test/transactions", headers=admin).json()["transactions"]
    assert all(t["providerReferenceId"] != "pay_once0001" for t in stripe)


def test_without_the_event_id_header_the_same_event_is_still_recognised(
    client: TestClient, keys: None, sql: Sql
) -> None:
    body = event("payment.failed", payment=_payment("pay_noheader01", status="failed", captured=False))
    assert post_event(client, body).json() == {"received": True, "handled": True}
    before = _events(sql)
    assert post_event(client, body).json() == {"received": True, "handled": False}
    assert _events(sql) == before
    assert _transaction(sql, "pay_noheader01")["type"] == "failed_payment"


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "Missing X-Razorpay-Signature header"),
        (
            {"x-razorpay-signature": sign("another_secret", b"{}")},
            400,
            "Invalid Razorpay webhook signature. Confirm the Razorpay Dashboard webhook secret matches the "
            "test InsForge webhook setup and the webhook URL points to /api/webhooks/razorpay/test.",
        ),
        ({"x-razorpay-signature": "zz"}, 400, None),
    ],
)
def test_a_call_without_a_good_signature_is_refused_and_records_nothing(
    client: TestClient, keys: None, sql: Sql, headers: dict[str, str], status: int, message: str | None
) -> None:
    before = _events(sql)
    payload = json.dumps(event("payment.captured", payment=_payment("pay_forged01"))).encode()
    answer = client.post(RECEIVER, content=payload, headers=headers)
    assert answer.status_code == status
    if message is not None:
        assert answer.json()["message"] == message
    assert answer.json()["nextActions"]
    assert _events(sql) == before
    assert sql("select * from payments.transactions where provider_object_id = 'pay_forged01'") == []


def test_a_body_changed_after_signing_is_refused(client: TestClient, keys: None, sql: Sql) -> None:
    payload = json.dumps(event("payment.captured", payment=_payment("pay_tampered1"))).encode()
    signature = sign(WEBHOOK_SECRET, payload)
    tampered = payload.replace(b"50000", b"5")
    answer = client.post(RECEIVER, content=tampered, headers={"x-razorpay-signature": signature})
    assert answer.status_code == 400
    assert sql("select * from payments.transactions where provider_object_id = 'pay_tampered1'") == []


def test_a_signed_body_that_is_not_an_event_is_a_400(client: TestClient, keys: None) -> None:
    for payload in (b"not json", b"[]", b'{"entity": "event"}'):
        answer = client.post(
            RECEIVER, content=payload, headers={"x-razorpay-signature": sign(WEBHOOK_SECRET, payload)}
        )
        assert answer.status_code == 400
        assert answer.json()["message"] == "Invalid Razorpay webhook payload"


def test_without_keys_the_receiver_answers_503_and_an_unknown_environment_400(
    client: TestClient, admin: dict[str, str]
) -> None:
    client.delete("/api/payments/razorpay/live/config", headers=admin)
    payload = b"{}"
    headers = {"x-razorpay-signature": sign(WEBHOOK_SECRET, payload)}
    answer = client.post("/api/webhooks/razorpay/live", content=payload, headers=headers)
    assert answer.status_code == 503
    assert answer.json()["message"] == "Razorpay live webhook secret is not configured"
    unknown = client.post("/api/webhooks/razorpay/prod", content=payload, headers=headers)
    assert unknown.status_code == 400


def test_an_event_kilnbase_does_not_read_is_recorded_and_ignored(
    client: TestClient, keys: None, sql: Sql
) -> None:
    body = event("payment.dispute.created", dispute={"id": "disp_1", "entity": "dispute"})
    answer = post_event(client, body, event_id="evt_ignored01")
    assert answer.json() == {"received": True, "handled": False}
    assert sql(
        "select processing_status from payments.webhook_events where provider_event_id = 'evt_ignored01'"
    ) == [{"processing_status": "ignored"}]


def test_a_captured_payment_marks_its_order_paid(
    client: TestClient, keys: None, sql: Sql, user: tuple[str, dict[str, str]]
) -> None:
    user_id, headers = user
    body = {"amount": 50000, "currency": "INR", "subject": {"type": "user", "id": user_id}}
    order = client.post("/api/payments/razorpay/test/orders", headers=headers, json=body).json()["order"]
    payment = _payment(f"pay_{uuid.uuid4().hex[:12]}", order_id=order["orderId"])
    paid = event("order.paid", payment=payment, order={"id": order["orderId"], "entity": "order"})
    assert post_event(client, paid).json() == {"received": True, "handled": True}
    stored = sql(
        "select status, amount_paid, amount_due, verified_payment_id from payments.razorpay_orders "
        "where id = %s",
        order["id"],
    )
    assert stored == [
        {"status": "paid", "amount_paid": 50000, "amount_due": 0, "verified_payment_id": payment["id"]}
    ]
    # The order's billing subject is the payment's.
    row = _transaction(sql, payment["id"])
    assert (row["subject_type"], row["subject_id"]) == ("user", user_id)


def test_subscription_events_keep_the_subscription_and_its_charges(
    client: TestClient, admin: dict[str, str], keys: None, sql: Sql
) -> None:
    notes = {"insforge_subject_type": "team", "insforge_subject_id": "t42"}
    subscription = subscription_entity(
        "sub_events00001", "plan_events", "active", notes=notes, customer_id="cust_1"
    )
    charge = _payment("pay_charge00001", invoice_id="inv_1")
    charged = event("subscription.charged", subscription=subscription, payment=charge)
    assert post_event(client, charged, event_id="evt_sub_charged1").json()["handled"] is True
    row = _transaction(sql, "pay_charge00001")
    assert row["type"] == "subscription_invoice" and (row["subject_type"], row["subject_id"]) == (
        "team",
        "t42",
    )
    halted = event("subscription.halted", subscription={**subscription, "status": "halted"})
    assert post_event(client, halted, event_id="evt_sub_halted1").json()["handled"] is True
    listed = client.get(
        "/api/payments/razorpay/test/subscriptions",
        headers=admin,
        params={"subjectType": "team", "subjectId": "t42"},
    ).json()["subscriptions"]
    assert [(s["subscriptionId"], s["status"], s["customerId"]) for s in listed] == [
        ("sub_events00001", "halted", "cust_1")
    ]
    assert sql(
        "select subject_type, subject_id from payments.customer_mappings where provider = 'razorpay' "
        "and provider_customer_id = 'cust_1'"
    ) == [{"subject_type": "team", "subject_id": "t42"}]


def test_refunds_have_their_own_row_and_mark_the_payment_refunded(
    client: TestClient, keys: None, sql: Sql
) -> None:
    post_event(client, event("payment.captured", payment=_payment("pay_refunded01")), event_id="evt_ref_pay")
    refund = {
        "id": "rfnd_00001",
        "entity": "refund",
        "payment_id": "pay_refunded01",
        "amount": 20000,
        "currency": "INR",
        "status": "processed",
        "created_at": 1_767_225_700,
    }
    assert post_event(client, event("refund.processed", refund=refund), event_id="evt_ref1").json()["handled"]
    assert _transaction(sql, "rfnd_00001")["type"] == "refund"
    assert _transaction(sql, "pay_refunded01") | {"subject_type": None, "subject_id": None} == {
        "type": "one_time_payment",
        "status": "partially_refunded",
        "amount": 50000,
        "amount_refunded": 20000,
        "subject_type": None,
        "subject_id": None,
    }
    rest = {**refund, "id": "rfnd_00002", "amount": 30000}
    post_event(client, event("refund.processed", refund=rest), event_id="evt_ref2")
    assert _transaction(sql, "pay_refunded01")["status"] == "refunded"
    assert _transaction(sql, "pay_refunded01")["amount_refunded"] == 50000


def test_an_event_with_an_amount_past_bigint_is_recorded_failed_and_acknowledged(
    client: TestClient, keys: None, sql: Sql
) -> None:
    body = event("payment.captured", payment=_payment("pay_huge000001", amount=2**63))
    for attempt in (1, 2):
        answer = post_event(client, body, event_id="evt_huge_rzp")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"received": True, "handled": False}
        row = sql(
            "select processing_status, attempt_count, last_error from payments.webhook_events "
            "where provider = 'razorpay' and provider_event_id = 'evt_huge_rzp'"
        )[0]
        assert (row["processing_status"], row["attempt_count"]) == ("failed", attempt)
        assert "bigint out of range" in row["last_error"]
    assert sql("select * from payments.transactions where provider_object_id = 'pay_huge000001'") == []


def test_stored_keys_that_no_longer_decrypt_ask_the_admin_to_set_them_again(
    client: TestClient, admin: dict[str, str], keys: None, sql: Sql, user: tuple[str, dict[str, str]]
) -> None:
    sql(
        "update payments.provider_secrets set secret_key_ciphertext = webhook_secret_ciphertext, "
        "webhook_secret_ciphertext = key_id_ciphertext where provider = 'razorpay' and environment = 'test'"
    )
    order = client.post(
        "/api/payments/razorpay/test/orders", headers=user[1], json={"amount": 100, "currency": "INR"}
    )
    assert order.status_code == 400
    assert order.json()["message"].startswith(
        "The stored RAZORPAY_TEST_KEY_SECRET can no longer be decrypted"
    )
    assert "PUT /api/payments/razorpay/test/config" in order.json()["nextActions"]
    payload = json.dumps(event("payment.captured", payment=_payment("pay_undecrypt1"))).encode()
    hook = client.post(
        RECEIVER, content=payload, headers={"x-razorpay-signature": sign(WEBHOOK_SECRET, payload)}
    )
    assert hook.status_code == 503
    assert hook.json()["message"].startswith(
        "The stored RAZORPAY_TEST_WEBHOOK_SECRET can no longer be decrypted"
    )
    setup = client.get("/api/payments/razorpay/test/webhook", headers=admin)
    assert setup.status_code == 400 and "rotate-secret" in setup.json()["nextActions"]
    assert client.post("/api/payments/razorpay/test/webhook/rotate-secret", headers=admin).status_code == 200
    assert configure(client, admin, "test").status_code == 200
    again = client.post(
        "/api/payments/razorpay/test/orders", headers=user[1], json={"amount": 100, "currency": "INR"}
    )
    assert again.status_code == 201


def test_a_signed_event_with_a_nul_character_is_recorded_not_a_server_error(
    client: TestClient, keys: None, sql: Sql
) -> None:
    body = event("payment.captured", payment=_payment("pay_nul0000001", description="a\u0000b"))
    answer = post_event(client, body, event_id="evt_nul_rzp")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": True, "handled": True}
    assert sql(
        "select processing_status from payments.webhook_events where provider_event_id = 'evt_nul_rzp'"
    ) == [{"processing_status": "processed"}]


def test_a_subscription_keeps_its_billing_subject_when_a_later_event_names_none(
    client: TestClient, admin: dict[str, str], keys: None
) -> None:
    team = f"team-{uuid.uuid4().hex[:6]}"
    subscription_id = f"sub_{uuid.uuid4().hex[:14]}"
    notes = {"insforge_subject_type": "team", "insforge_subject_id": team}
    first = subscription_entity(subscription_id, "plan_kept", "active", notes=notes, customer_id=None)
    activated = event("subscription.activated", subscription=first)
    assert post_event(client, activated, event_id=f"evt_{uuid.uuid4().hex[:12]}").status_code == 200
    # No notes and no customer: nothing in this event names a subject.
    paused = event("subscription.paused", subscription={**first, "status": "paused", "notes": {}})
    assert post_event(client, paused, event_id=f"evt_{uuid.uuid4().hex[:12]}").status_code == 200
    listed = client.get(
        "/api/payments/razorpay/test/subscriptions",
        headers=admin,
        params={"subjectType": "team", "subjectId": team},
    ).json()["subscriptions"]
    assert [(s["subscriptionId"], s["status"], s["subjectId"]) for s in listed] == [
        (subscription_id, "paused", team)
    ]
