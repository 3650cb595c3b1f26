"""The admin's customers lists, `GET /api/payments/{stripe,razorpay}/:environment/customers`: the customers
Stripe's sync and `customer.*` events and Razorpay's sync bring in, what each one paid (by customer, and by
email for a guest payment), their card and country, InsForge's `?limit` bounds, and who may read them.

Each test makes customers of its own (fresh ids) and looks for them in the list, so tests do not depend
on one another."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.payments import razorpay_calls
from tests.payments.stripe_calls import post_event
from tests.support.app import agent_headers, anon_headers, mcp_call
from tests.support.fake_razorpay import FakeRazorpay
from tests.support.fake_stripe import FakeStripe, event
from tests.support.side_sql import Sql

STRIPE = "/api/payments/stripe/test/customers"
RAZORPAY = "/api/payments/razorpay/test/customers"


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _listed(client: TestClient, admin: dict[str, str], path: str = STRIPE) -> dict[str, dict[str, Any]]:
    answer = client.get(path, headers=admin, params={"limit": 100})
    assert answer.status_code == 200, answer.text
    return {row["providerCustomerId"]: row for row in answer.json()["customers"]}


def _customer(customer_id: str, email: str | None, **extra: Any) -> dict[str, Any]:
    return {"id": customer_id, "object": "customer", "email": email, "created": 1_767_225_600, **extra}


def _paid(customer: str | None, email: str, amount: int, currency: str = "usd") -> tuple[str, dict[str, Any]]:
    """A one-time checkout paid by `customer` (None: a guest, known by email only); its payment intent."""
    intent = _id("pi")
    session = {
        "id": _id("cs"),
        "object": "checkout.session",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "customer": customer,
        "payment_intent": intent,
        "amount_total": amount,
        "currency": currency,
        "created": int(time.time()),
        "customer_details": {"email": email},
        "metadata": {},
    }
    return intent, event("checkout.session.completed", session, _id("evt"))


def test_a_stripe_sync_lists_each_customer_with_card_country_and_what_they_paid(
    client: TestClient, admin: dict[str, str], configured: Callable[..., None], stripe: FakeStripe
) -> None:
    configured()
    carded, sourced = _id("cus"), _id("cus")
    stripe.customers[carded] = _customer(
        carded,
        f"{carded}@example.com",
        name="Ada Lovelace",
        phone="+441234",
        metadata={"plan": "pro"},
        address={"country": "gb"},
        invoice_settings={
            "default_payment_method": {"id": "pm_1", "card": {"brand": "Visa", "last4": "4242"}}
        },
    )
    stripe.customers[sourced] = _customer(
        sourced,
        None,
        name="Grace",
        shipping={"address": {"country": "US"}},
        default_source={"id": "card_1", "object": "card", "brand": "MasterCard", "last4": "4444"},
    )
    assert client.post("/api/payments/stripe/test/sync", headers=admin).status_code == 200
    sent = stripe.calls_to("GET", "/v1/customers")[-1].form
    assert sent["expand[0]"] == "data.invoice_settings.default_payment_method"
    # Two payments, one then refunded in part: it still counts, less what was refunded.
    first, paid = _paid(carded, f"{carded}@example.com", 3000)
    assert post_event(client, paid).json()["handled"] is True
    assert post_event(client, _paid(carded, f"{carded}@example.com", 500)[1]).json()["handled"] is True
    charge = {"id": _id("ch"), "object": "charge", "payment_intent": first, "amount_refunded": 1000}
    assert post_event(client, event("charge.refunded", charge, _id("evt"))).json()["handled"] is True

    listed = _listed(client, admin)
    assert listed[carded] == {
        "environment": "test",
        "provider": "stripe",
        "providerCustomerId": carded,
        "email": f"{carded}@example.com",
        "name": "Ada Lovelace",
        "phone": "+441234",
        "deleted": False,
        "metadata": {"plan": "pro"},
        "providerCreatedAt": "2026-01-01T00:00:00.000Z",
        "syncedAt": listed[carded]["syncedAt"],
        "paymentsCount": 2,
        "lastPaymentAt": listed[carded]["lastPaymentAt"],
        "totalSpend": 2500,
        "totalSpendCurrency": "usd",
        "paymentMethodBrand": "visa",
        "paymentMethodLast4": "4242",
        "countryCode": "GB",
    }
    assert listed[carded]["syncedAt"].endswith("Z") and listed[carded]["lastPaymentAt"] is not None
    never = listed[sourced]
    assert (never["paymentMethodBrand"], never["paymentMethodLast4"], never["countryCode"]) == (
        "mastercard",
        "4444",
        "US",
    )
    assert never["paymentsCount"] == 0 and never["totalSpend"] is None and never["lastPaymentAt"] is None


def test_payments_in_two_currencies_are_counted_but_not_summed(
    client: TestClient, admin: dict[str, str], configured: Callable[..., None]
) -> None:
    configured()
    customer = _id("cus")
    assert (
        post_event(client, event("customer.created", _customer(customer, None), _id("evt"))).status_code
        == 200
    )
    assert post_event(client, _paid(customer, "two@example.com", 1000, "usd")[1]).status_code == 200
    assert post_event(client, _paid(customer, "two@example.com", 900, "eur")[1]).status_code == 200
    row = _listed(client, admin)[customer]
    assert row["paymentsCount"] == 2
    assert row["totalSpend"] is None and row["totalSpendCurrency"] is None


def test_customer_events_add_update_and_delete_a_customer(
    client: TestClient, admin: dict[str, str], configured: Callable[..., None], sql: Sql
) -> None:
    configured()
    customer = _id("cus")
    email = f"{customer}@example.com"
    created = post_event(
        client, event("customer.created", _customer(customer, email, name="Old"), _id("evt"))
    )
    assert created.status_code == 200 and created.json()["handled"] is True
    assert _listed(client, admin)[customer]["name"] == "Old"

    updated = _customer(customer, email, name="New", phone="+15550100", metadata={"tier": "gold"})
    assert post_event(client, event("customer.updated", updated, _id("evt"))).json()["handled"] is True
    row = _listed(client, admin)[customer]
    assert (row["name"], row["phone"], row["metadata"], row["deleted"]) == (
        "New",
        "+15550100",
        {"tier": "gold"},
        False,
    )

    # A checkout mapped the customer to a subject; once Stripe deletes it, it pays for that subject no more.
    subject = str(uuid.uuid4())
    session = _paid(customer, email, 100)[1]
    session["data"]["object"]["metadata"] = {"insforge_subject_type": "user", "insforge_subject_id": subject}
    assert post_event(client, session).status_code == 200
    mapped = "select count(*) as n from payments.customer_mappings where provider_customer_id = %s"
    assert sql(mapped, customer) == [{"n": 1}]
    deleted = post_event(
        client, event("customer.deleted", {"id": customer, "object": "customer"}, _id("evt"))
    )
    assert deleted.json()["handled"] is True
    row = _listed(client, admin)[customer]
    assert row["deleted"] is True and row["name"] == "New" and row["email"] == email
    assert sql(mapped, customer) == [{"n": 0}]
    # Deleted customers come after every current one.
    rows = client.get(STRIPE, headers=admin, params={"limit": 100}).json()["customers"]
    flags = [r["deleted"] for r in rows]
    assert flags == sorted(flags)


def test_a_guest_payment_counts_for_the_one_customer_with_its_email(
    client: TestClient, admin: dict[str, str], configured: Callable[..., None]
) -> None:
    configured()
    only, twin_a, twin_b = _id("cus"), _id("cus"), _id("cus")
    unique, shared = f"{only}@example.com", f"{twin_a}@example.com"
    for customer_id, email in ((only, unique.upper()), (twin_a, shared), (twin_b, shared)):
        assert (
            post_event(
                client, event("customer.created", _customer(customer_id, email), _id("evt"))
            ).status_code
            == 200
        )
    assert post_event(client, _paid(None, unique, 700)[1]).status_code == 200
    assert post_event(client, _paid(None, shared, 800)[1]).status_code == 200
    listed = _listed(client, admin)
    assert (listed[only]["paymentsCount"], listed[only]["totalSpend"]) == (1, 700)
    # Two customers share that email: the payment is credited to neither rather than to both.
    assert listed[twin_a]["paymentsCount"] == 0 and listed[twin_b]["paymentsCount"] == 0


def test_a_failed_customer_listing_leaves_the_catalog_sync_standing(
    client: TestClient, admin: dict[str, str], configured: Callable[..., None], stripe: FakeStripe
) -> None:
    configured()
    missing = _id("cus")
    stripe.customers[missing] = _customer(missing, None)
    stripe.fail_next("/v1/customers", 500, {"type": "api_error", "message": "Customers are down"})
    answer = client.post("/api/payments/stripe/test/sync", headers=admin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["connection"]["lastSyncStatus"] == "succeeded"
    assert missing not in _listed(client, admin)
    assert client.post("/api/payments/stripe/test/sync", headers=admin).status_code == 200
    assert missing in _listed(client, admin)


def test_a_customer_stripe_no_longer_lists_is_shown_deleted(
    client: TestClient, admin: dict[str, str], configured: Callable[..., None], stripe: FakeStripe
) -> None:
    configured()
    gone = _id("cus")
    stripe.customers[gone] = _customer(gone, f"{gone}@example.com")
    assert client.post("/api/payments/stripe/test/sync", headers=admin).status_code == 200
    assert _listed(client, admin)[gone]["deleted"] is False
    del stripe.customers[gone]
    assert client.post("/api/payments/stripe/test/sync", headers=admin).status_code == 200
    row = _listed(client, admin)[gone]
    assert row["deleted"] is True and row["email"] == f"{gone}@example.com"


def test_limit_bounds_the_list(
    client: TestClient, admin: dict[str, str], configured: Callable[..., None]
) -> None:
    configured()
    for _ in range(3):
        assert (
            post_event(client, event("customer.created", _customer(_id("cus"), None), _id("evt"))).status_code
            == 200
        )
    one = client.get(STRIPE, headers=admin, params={"limit": 1})
    assert one.status_code == 200 and len(one.json()["customers"]) == 1
    assert len(client.get(STRIPE, headers=admin, params={"limit": 2}).json()["customers"]) == 2
    assert client.get(STRIPE, headers=admin, params={"limit": 100}).status_code == 200
    assert client.get(RAZORPAY, headers=admin, params={"limit": 100}).status_code == 200


@pytest.mark.parametrize("path", [STRIPE, RAZORPAY])
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "limit: an integer from 1 to 100"),
        ({"limit": "101"}, "limit: an integer from 1 to 100"),
        ({"limit": "ten"}, "limit: an integer from 1 to 100"),
        ({"limit": "-1"}, "limit: an integer from 1 to 100"),
        ({"email": "a@example.com"}, "email: not a field of this request"),
    ],
)
def test_a_bad_query_is_refused_saying_why(
    client: TestClient, admin: dict[str, str], path: str, params: dict[str, str], message: str
) -> None:
    answer = client.get(path, headers=admin, params=params)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error"] == "INVALID_INPUT" and body["message"] == message and body["nextActions"]


@pytest.mark.parametrize("provider", ["stripe", "razorpay"])
def test_an_unknown_environment_is_refused(client: TestClient, admin: dict[str, str], provider: str) -> None:
    answer = client.get(f"/api/payments/{provider}/staging/customers", headers=admin)
    assert answer.status_code == 400
    assert (
        answer.json()["message"]
        == "environment: Invalid enum value. Expected 'test' | 'live', received 'staging'"
    )


@pytest.mark.parametrize("path", [STRIPE, RAZORPAY])
def test_the_customers_are_the_admins(
    client: TestClient, admin: dict[str, str], user: tuple[str, dict[str, str]], path: str
) -> None:
    assert client.get(path).status_code == 401
    assert client.get(path, headers=anon_headers(client)).status_code == 401
    assert client.get(path, headers=user[1]).status_code == 403
    assert client.get(path, headers=agent_headers(client, admin, ["schedules:read"])).status_code == 403
    reader = client.get(path, headers=agent_headers(client, admin, ["payments:read"]))
    assert reader.status_code == 200 and isinstance(reader.json()["customers"], list)


def test_a_razorpay_sync_lists_its_customers_apart_from_stripes(
    client: TestClient, admin: dict[str, str], razorpay: FakeRazorpay
) -> None:
    assert razorpay_calls.configure(client, admin, "test").status_code == 200
    customer = _id("cust")
    razorpay.customers[customer] = {
        "id": customer,
        "entity": "customer",
        "name": "Ravi",
        "email": f"{customer}@example.com",
        "contact": "+919000000000",
        "notes": {"source": "app", "vip": True},
        "created_at": 1_767_225_600,
    }
    for payment_id, amount in ((_id("pay"), 1200), (_id("pay"), 800)):
        razorpay.payments[payment_id] = {
            "id": payment_id,
            "entity": "payment",
            "amount": amount,
            "currency": "INR",
            "status": "captured",
            "customer_id": customer,
            "created_at": 1_767_225_600,
        }
    (result,) = client.post("/api/payments/razorpay/test/sync", headers=admin).json()["results"]
    assert result["status"] == "succeeded", result
    row = _listed(client, admin, RAZORPAY)[customer]
    assert row["provider"] == "razorpay" and row["name"] == "Ravi" and row["phone"] == "+919000000000"
    assert row["metadata"] == {"source": "app", "vip": "true"}
    assert row["providerCreatedAt"] == "2026-01-01T00:00:00.000Z"
    assert (row["paymentsCount"], row["totalSpend"], row["totalSpendCurrency"]) == (2, 2000, "inr")
    assert (row["paymentMethodBrand"], row["countryCode"], row["deleted"]) == (None, None, False)
    assert customer not in _listed(client, admin, STRIPE)


def test_the_mcp_tools_list_the_same_customers_and_keep_the_limit_bounds(
    client: TestClient, admin: dict[str, str], configured: Callable[..., None]
) -> None:
    configured()
    customer = _id("cus")
    created = event("customer.created", _customer(customer, f"{customer}@example.com"), _id("evt"))
    assert post_event(client, created).status_code == 200
    arguments = {"environment": "test", "limit": 100}
    listed = json.loads(mcp_call(client, admin, "list-stripe-customers", arguments))
    assert customer in {row["providerCustomerId"] for row in listed["customers"]}
    razorpay = json.loads(mcp_call(client, admin, "list-razorpay-customers", {"environment": "test"}))
    assert customer not in {row["providerCustomerId"] for row in razorpay["customers"]}
    refused = mcp_call(client, admin, "list-stripe-customers", {"environment": "test", "limit": 101})
    assert "less than or equal to 100" in refused
