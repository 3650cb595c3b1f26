"""Checkout and customer portal sessions, as the SDK starts them: a signed-in caller, RLS deciding which
billing subjects it may pay for, what is sent to Stripe, idempotency keys, and every refusal."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.payments.stripe_calls import post_event
from tests.support.app import agent_headers, anon_headers
from tests.support.fake_stripe import FakeStripe, event
from tests.support.side_sql import Sql

CHECKOUT = "/api/payments/stripe/test/checkout-sessions"
PORTAL = "/api/payments/stripe/test/customer-portal-sessions"


def _price(stripe: FakeStripe, recurring: str | None = None) -> str:
    price_id = f"price_{uuid.uuid4().hex[:10]}"
    stripe.add_price(price_id, f"prod_{uuid.uuid4().hex[:10]}", 1500, recurring)
    return price_id


def _body(price_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "mode": "payment",
        "lineItems": [{"priceId": price_id, "quantity": 2}],
        "successUrl": "https://app.example.com/success",
        "cancelUrl": "https://app.example.com/pricing",
        **extra,
    }


def _rows(sql: Sql) -> int:
    return int(sql("select count(*) as n from payments.stripe_checkout_sessions")[0]["n"])


def test_a_signed_in_user_starts_a_checkout_and_stripe_gets_what_it_needs(
    client: TestClient, stripe: FakeStripe, configured: Callable[..., None], user: tuple[str, dict[str, str]]
) -> None:
    configured()
    _, headers = user
    price = _price(stripe)
    answer = client.post(CHECKOUT, headers=headers, json=_body(price, metadata={"order": "42"}))
    assert answer.status_code == 201, answer.text
    session = answer.json()["checkoutSession"]
    assert session["status"] == "open" and session["mode"] == "payment" and session["environment"] == "test"
    assert session["url"] == f"https://checkout.stripe.com/c/pay/{session['checkoutSessionId']}"
    assert session["subjectType"] is None and session["paymentStatus"] == "unpaid"
    sent = stripe.calls_to("POST", "/v1/checkout/sessions")[-1]
    assert sent.headers["authorization"] == "Bearer sk_test_kilnbase_payments_0001"
    assert sent.form["line_items[0][price]"] == price and sent.form["line_items[0][quantity]"] == "2"
    assert sent.form["success_url"] == "https://app.example.com/success"
    assert sent.form["client_reference_id"] == session["id"]
    assert sent.form["metadata[order]"] == "42" and sent.form["metadata[insforge_checkout_mode]"] == "payment"
    assert sent.form["metadata[insforge_checkout_session_id]"] == session["id"]
    assert sent.form["payment_intent_data[metadata][order]"] == "42"
    assert sent.headers["idempotency-key"] == f"kilnbase:test:checkout_session:{session['id']}"


def test_a_checkout_needs_a_credential(client: TestClient, stripe: FakeStripe) -> None:
    before = len(stripe.calls)
    answer = client.post(CHECKOUT, json=_body("price_x"))
    assert answer.status_code == 401
    assert len(stripe.calls) == before


def test_a_user_pays_for_themselves_but_not_for_another_subject(
    client: TestClient,
    stripe: FakeStripe,
    configured: Callable[..., None],
    user: tuple[str, dict[str, str]],
    sql: Sql,
) -> None:
    configured()
    user_id, headers = user
    price = _price(stripe, "month")
    own = {"mode": "subscription", "subject": {"type": "user", "id": user_id}}
    answer = client.post(CHECKOUT, headers=headers, json=_body(price, **own))
    assert answer.status_code == 201, answer.text
    assert answer.json()["checkoutSession"]["subjectId"] == user_id
    sent = stripe.calls_to("POST", "/v1/checkout/sessions")[-1]
    assert sent.form["metadata[insforge_subject_type]"] == "user"
    assert sent.form["subscription_data[metadata][insforge_subject_id]"] == user_id
    before, rows = len(stripe.calls), _rows(sql)
    for subject in ({"type": "user", "id": str(uuid.uuid4())}, {"type": "team", "id": "t1"}):
        refused = client.post(CHECKOUT, headers=headers, json=_body(price, subject=subject))
        assert refused.status_code == 403, refused.text
        assert "RLS policies" in refused.json()["message"]
    assert len(stripe.calls) == before and _rows(sql) == rows


def test_the_anon_key_buys_once_without_a_subject_and_the_api_key_for_any_subject(
    client: TestClient, stripe: FakeStripe, configured: Callable[..., None], admin: dict[str, str]
) -> None:
    configured()
    price = _price(stripe)
    anon = anon_headers(client)
    assert (
        client.post(CHECKOUT, headers=anon, json=_body(price, customerEmail="a@example.com")).status_code
        == 201
    )
    assert stripe.calls_to("POST", "/v1/checkout/sessions")[-1].form["customer_email"] == "a@example.com"
    team = {"type": "team", "id": "t-42"}
    assert client.post(CHECKOUT, headers=anon, json=_body(price, subject=team)).status_code == 403
    by_admin = client.post(CHECKOUT, headers=admin, json=_body(price, subject=team))
    assert by_admin.status_code == 201
    assert stripe.calls_to("POST", "/v1/checkout/sessions")[-1].form["customer_creation"] == "always"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "rent"}, "mode: Invalid enum value. Expected 'payment' | 'subscription', received 'rent'"),
        ({"mode": "subscription"}, "subject: Subscription checkout requires a billing subject"),
        ({"lineItems": []}, "lineItems: a list of 1 to 100 items"),
        (
            {"lineItems": [{"priceId": "price_1", "quantity": 0}]},
            "lineItems.0.quantity: an integer from 1 to 999",
        ),
        ({"successUrl": "javascript:alert(1)"}, "successUrl: Success URL must be a valid URL"),
        (
            {"metadata": {"insforge_subject_id": "x"}},
            "metadata: Metadata keys starting with insforge_ are reserved",
        ),
        ({"customerEmail": "not-an-email"}, "customerEmail: Invalid email"),
        ({"subject": {"type": "user"}}, "subject.id: Required"),
        ({"coupon": "FREE"}, "coupon: not a field of this request"),
    ],
)
def test_a_bad_checkout_is_a_400_that_records_and_sends_nothing(
    client: TestClient,
    stripe: FakeStripe,
    configured: Callable[..., None],
    user: tuple[str, dict[str, str]],
    sql: Sql,
    change: dict[str, Any],
    message: str,
) -> None:
    configured()
    before, rows = len(stripe.calls), _rows(sql)
    answer = client.post(CHECKOUT, headers=user[1], json={**_body("price_1"), **change})
    assert answer.status_code == 400
    assert answer.json()["error"] == "INVALID_INPUT" and answer.json()["message"] == message
    assert len(stripe.calls) == before and _rows(sql) == rows


def test_a_price_stripe_does_not_know_is_stripes_400_and_the_session_is_marked_failed(
    client: TestClient, configured: Callable[..., None], user: tuple[str, dict[str, str]], sql: Sql
) -> None:
    configured()
    answer = client.post(CHECKOUT, headers=user[1], json=_body("price_missing"))
    assert answer.status_code == 400
    assert answer.json() == {
        **answer.json(),
        "error": "UPSTREAM_FAILURE",
        "message": "No such price: 'price_missing'",
    }
    failed = sql(
        "select status, last_error from payments.stripe_checkout_sessions where created_by = %s", user[0]
    )
    assert failed == [{"status": "failed", "last_error": "No such price: 'price_missing'"}]


def test_an_idempotency_key_answers_the_same_session_and_refuses_another_request(
    client: TestClient, stripe: FakeStripe, configured: Callable[..., None], user: tuple[str, dict[str, str]]
) -> None:
    configured()
    price = _price(stripe)
    key = f"order-{uuid.uuid4()}"
    first = client.post(CHECKOUT, headers=user[1], json=_body(price, idempotencyKey=key))
    sent = len(stripe.calls_to("POST", "/v1/checkout/sessions"))
    again = client.post(CHECKOUT, headers=user[1], json=_body(price, idempotencyKey=key))
    assert first.status_code == again.status_code == 201
    assert again.json()["checkoutSession"] == first.json()["checkoutSession"]
    assert len(stripe.calls_to("POST", "/v1/checkout/sessions")) == sent
    assert stripe.calls_to("POST", "/v1/checkout/sessions")[-1].headers["idempotency-key"].endswith(key)
    other = client.post(CHECKOUT, headers=user[1], json=_body(price, idempotencyKey=key, metadata={"a": "b"}))
    assert other.status_code == 409
    assert other.json()["error"] == "PAYMENT_CHECKOUT_ALREADY_EXISTS"


def test_an_idempotency_key_in_any_script_reaches_stripe_as_a_header_it_can_carry(
    client: TestClient, stripe: FakeStripe, configured: Callable[..., None], user: tuple[str, dict[str, str]]
) -> None:
    """A key outside ASCII (InsForge's schema takes any text) is sent as its digest, the same every time, so
    a retry still answers the first session."""
    configured()
    price = _price(stripe)
    key = f"commande-été-{uuid.uuid4()}"
    first = client.post(CHECKOUT, headers=user[1], json=_body(price, idempotencyKey=key))
    assert first.status_code == 201, first.text
    header = stripe.calls_to("POST", "/v1/checkout/sessions")[-1].headers["idempotency-key"]
    assert header.isascii() and header.startswith("sha256-")
    again = client.post(CHECKOUT, headers=user[1], json=_body(price, idempotencyKey=key))
    assert again.status_code == 201
    assert again.json()["checkoutSession"] == first.json()["checkoutSession"]


def test_without_a_key_for_the_environment_a_checkout_is_a_400(
    client: TestClient,
    stripe: FakeStripe,
    unconfigured: Callable[[str], None],
    user: tuple[str, dict[str, str]],
) -> None:
    unconfigured("live")
    before = len(stripe.calls)
    answer = client.post(
        "/api/payments/stripe/live/checkout-sessions", headers=user[1], json=_body("price_1")
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "PAYMENT_CONFIG_INVALID"
    assert answer.json()["message"] == "STRIPE_LIVE_SECRET_KEY is not configured"
    assert len(stripe.calls) == before
    wrong = client.post(
        "/api/payments/stripe/sandbox/checkout-sessions", headers=user[1], json=_body("price_1")
    )
    assert wrong.status_code == 400 and wrong.json()["error"] == "INVALID_INPUT"


def test_the_portal_opens_for_a_subject_that_paid_and_only_for_its_user(
    client: TestClient, stripe: FakeStripe, configured: Callable[..., None], user: tuple[str, dict[str, str]]
) -> None:
    configured()
    user_id, headers = user
    subject = {"type": "user", "id": user_id}
    missing = client.post(PORTAL, headers=headers, json={"subject": subject})
    assert missing.status_code == 404 and missing.json()["error"] == "PAYMENT_NOT_FOUND"
    customer = f"cus_{uuid.uuid4().hex[:10]}"
    completed = {
        "id": f"cs_{uuid.uuid4().hex[:10]}",
        "object": "checkout.session",
        "mode": "subscription",
        "customer": customer,
        "payment_status": "paid",
        "metadata": {"insforge_subject_type": "user", "insforge_subject_id": user_id},
    }
    assert (
        post_event(
            client, event("checkout.session.completed", completed, f"evt_{uuid.uuid4().hex}")
        ).status_code
        == 200
    )
    answer = client.post(
        PORTAL, headers=headers, json={"subject": subject, "returnUrl": "https://app.example.com/account"}
    )
    assert answer.status_code == 201, answer.text
    portal = answer.json()["customerPortalSession"]
    assert portal["status"] == "created" and portal["customerId"] == customer
    assert portal["url"].startswith("https://billing.stripe.com/p/session/")
    sent = stripe.calls_to("POST", "/v1/billing_portal/sessions")[-1]
    assert sent.form == {"customer": customer, "return_url": "https://app.example.com/account"}
    # A later checkout of that subject pays as the same customer.
    price = _price(stripe, "month")
    again = client.post(CHECKOUT, headers=headers, json=_body(price, mode="subscription", subject=subject))
    assert again.status_code == 201
    assert stripe.calls_to("POST", "/v1/checkout/sessions")[-1].form["customer"] == customer


def test_the_portal_is_refused_to_anon_strangers_other_subjects_and_bad_bodies(
    client: TestClient, stripe: FakeStripe, configured: Callable[..., None], user: tuple[str, dict[str, str]]
) -> None:
    configured()
    before = len(stripe.calls)
    other = {"subject": {"type": "user", "id": str(uuid.uuid4())}}
    assert client.post(PORTAL, json=other).status_code == 401
    anon = client.post(PORTAL, headers=anon_headers(client), json=other)
    assert anon.status_code == 401 and anon.json()["error"] == "AUTH_INVALID_CREDENTIALS"
    assert client.post(PORTAL, headers=user[1], json=other).status_code == 403
    bad = client.post(
        PORTAL, headers=user[1], json={"subject": {"type": "user", "id": user[0]}, "returnUrl": "x"}
    )
    assert bad.status_code == 400 and bad.json()["message"] == "returnUrl: Return URL must be a valid URL"
    assert client.post(PORTAL, headers=user[1], json={}).json()["message"] == "subject: Required"
    assert len(stripe.calls) == before


def test_an_agent_key_starts_checkouts_only_with_payments_write(
    client: TestClient, stripe: FakeStripe, configured: Callable[..., None], admin: dict[str, str]
) -> None:
    configured()
    price = _price(stripe)
    reader = agent_headers(client, admin, ["payments:read"])
    assert client.post(CHECKOUT, headers=reader, json=_body(price)).status_code == 403
    writer = agent_headers(client, admin, ["payments:write"])
    assert client.post(CHECKOUT, headers=writer, json=_body(price)).status_code == 201


def test_an_agent_key_may_not_open_a_customers_billing_portal_whatever_its_scopes(
    client: TestClient,
    stripe: FakeStripe,
    configured: Callable[..., None],
    admin: dict[str, str],
    user: tuple[str, dict[str, str]],
    sql: Sql,
) -> None:
    configured()
    user_id, headers = user
    subject = {"type": "user", "id": user_id}
    price = _price(stripe, "month")
    started = client.post(CHECKOUT, headers=headers, json=_body(price, mode="subscription", subject=subject))
    session = started.json()["checkoutSession"]
    completed = {
        "id": session["checkoutSessionId"],
        "object": "checkout.session",
        "mode": "subscription",
        "customer": f"cus_{uuid.uuid4().hex[:10]}",
        "metadata": {"insforge_subject_type": "user", "insforge_subject_id": user_id},
    }
    assert post_event(
        client, event("checkout.session.completed", completed, f"evt_{uuid.uuid4().hex}")
    ).is_success
    portals = len(stripe.calls_to("POST", "/v1/billing_portal/sessions"))
    rows = int(sql("select count(*) as n from payments.stripe_customer_portal_sessions")[0]["n"])
    for scopes in (["payments:write"], ["*:write"]):
        agent = agent_headers(client, admin, scopes)
        refused = client.post(PORTAL, headers=agent, json={"subject": subject})
        assert refused.status_code == 403, refused.text
        assert "billing portal" in refused.json()["message"] and "url" not in refused.text
    assert len(stripe.calls_to("POST", "/v1/billing_portal/sessions")) == portals
    assert int(sql("select count(*) as n from payments.stripe_customer_portal_sessions")[0]["n"]) == rows
    # The customer, signed in, still opens it.
    assert client.post(PORTAL, headers=headers, json={"subject": subject}).status_code == 201


def test_a_metadata_key_with_square_brackets_is_a_400_and_reaches_no_one(
    client: TestClient, configured: Callable[..., None], stripe: FakeStripe, sql: Sql, user: tuple[str, Any]
) -> None:
    configured()
    price = _price(stripe)
    before, rows = len(stripe.calls), _rows(sql)
    for key in ("a][insforge_subject_id", "b[", "]"):
        answer = client.post(CHECKOUT, headers=user[1], json=_body(price, metadata={key: "x"}))
        assert answer.status_code == 400, answer.text
        assert answer.json()["message"] == "metadata: keys without square brackets ([ or ])"
    assert len(stripe.calls) == before and _rows(sql) == rows
