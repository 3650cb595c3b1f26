"""Razorpay orders and subscriptions as the SDK makes them (a signed-in caller, RLS deciding the billing
subject, what is sent to Razorpay, Checkout's options), their signature checks, and the admin's catalog,
subscription and transaction lists."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.payments.razorpay_calls import TEST_KEY_ID, TEST_KEY_SECRET, configure
from tests.support.app import agent_headers, anon_headers, mcp_call
from tests.support.fake_razorpay import FakeRazorpay, sign, subscription_entity
from tests.support.side_sql import Sql

BASE = "/api/payments/razorpay/test"
ORDERS = BASE + "/orders"


@pytest.fixture
def keys(client: TestClient, admin: dict[str, str]) -> None:
    assert configure(client, admin, "test").status_code == 200


def _orders(sql: Sql) -> int:
    return int(sql("select count(*) as n from payments.razorpay_orders")[0]["n"])


def _plan(client: TestClient, admin: dict[str, str]) -> str:
    body = {"period": "monthly", "interval": 1, "item": {"name": "Pro", "amount": 49900, "currency": "inr"}}
    created = client.post(BASE + "/catalog/plans", headers=admin, json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["plan"]["planId"])


def _subscribe(client: TestClient, headers: dict[str, str], plan_id: str, subject_id: str) -> dict[str, Any]:
    body = {"planId": plan_id, "totalCount": 12, "subject": {"type": "user", "id": subject_id}}
    created = client.post(BASE + "/subscriptions", headers=headers, json=body)
    assert created.status_code == 201, created.text
    return dict(created.json())


def test_a_signed_in_user_creates_an_order_and_gets_checkout_options(
    client: TestClient, razorpay: FakeRazorpay, keys: None, user: tuple[str, dict[str, str]]
) -> None:
    user_id, headers = user
    body = {
        "amount": 50000,
        "currency": "inr",
        "receipt": "rcpt-42",
        "description": "Lifetime plan",
        "subject": {"type": "user", "id": user_id},
        "customerName": "Asha",
        "customerEmail": "asha@example.com",
        "callbackUrl": "https://app.example.com/paid",
        "notes": {"cart": "42"},
    }
    answer = client.post(ORDERS, headers=headers, json=body)
    assert answer.status_code == 201, answer.text
    order, options = answer.json()["order"], answer.json()["checkoutOptions"]
    assert order["status"] == "created" and order["orderId"].startswith("order_")
    assert order["amount"] == 50000 and order["currency"] == "inr" and order["receipt"] == "rcpt-42"
    assert order["subjectType"] == "user" and order["subjectId"] == user_id
    assert order["notes"]["insforge_order_id"] == order["id"]
    assert options == {
        "key": TEST_KEY_ID,
        "amount": 50000,
        "currency": "INR",
        "order_id": order["orderId"],
        "description": "Lifetime plan",
        "callback_url": "https://app.example.com/paid",
        "prefill": {"name": "Asha", "email": "asha@example.com"},
    }
    sent = razorpay.calls_to("POST", "/v1/orders")[-1]
    assert sent.key_id == TEST_KEY_ID
    assert (
        sent.body["amount"] == 50000 and sent.body["currency"] == "INR" and sent.body["receipt"] == "rcpt-42"
    )
    assert sent.body["notes"] == {
        "cart": "42",
        "insforge_subject_type": "user",
        "insforge_subject_id": user_id,
        "insforge_order_id": order["id"],
    }


def test_the_anon_key_creates_an_order_for_no_subject_only(
    client: TestClient, keys: None, sql: Sql, user: tuple[str, dict[str, str]]
) -> None:
    anon = anon_headers(client)
    assert client.post(ORDERS, headers=anon, json={"amount": 100, "currency": "INR"}).status_code == 201
    before = _orders(sql)
    someone = {"amount": 100, "currency": "INR", "subject": {"type": "user", "id": user[0]}}
    refused = client.post(ORDERS, headers=anon, json=someone)
    assert refused.status_code == 403
    assert refused.json()["error"] == "AUTH_UNAUTHORIZED"
    assert (
        refused.json()["message"]
        == "Razorpay order creation is not allowed by payments.razorpay_orders RLS policies"
    )
    assert _orders(sql) == before


def test_a_user_may_not_create_an_order_for_another_user(
    client: TestClient, razorpay: FakeRazorpay, keys: None, sql: Sql, user: tuple[str, dict[str, str]]
) -> None:
    _, headers = user
    before, sent = _orders(sql), len(razorpay.calls_to("POST", "/v1/orders"))
    body = {"amount": 100, "currency": "INR", "subject": {"type": "user", "id": str(uuid.uuid4())}}
    assert client.post(ORDERS, headers=headers, json=body).status_code == 403
    assert _orders(sql) == before and len(razorpay.calls_to("POST", "/v1/orders")) == sent


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"currency": "INR"}, "amount: Required"),
        ({"amount": 0, "currency": "INR"}, "amount: an integer from 1 to 99999999999"),
        ({"amount": 100, "currency": "RUPEE"}, "currency: at most 3 characters"),
        ({"amount": 100, "currency": "IN1"}, "currency: Currency must be a three-letter ISO currency code"),
        (
            {"amount": 100, "currency": "INR", "notes": {"insforge_x": "1"}},
            "notes: Notes keys starting with insforge_ are reserved",
        ),
        (
            {"amount": 100, "currency": "INR", "callbackUrl": "ftp://x"},
            "callbackUrl: Callback URL must be a valid URL",
        ),
        ({"amount": 100, "currency": "INR", "customerEmail": "nope"}, "customerEmail: Invalid email"),
        ({"amount": 100, "currency": "INR", "extra": 1}, "extra: not a field of this request"),
    ],
)
def test_a_bad_order_is_a_400_that_creates_nothing(
    client: TestClient,
    razorpay: FakeRazorpay,
    keys: None,
    sql: Sql,
    user: tuple[str, dict[str, str]],
    body: dict[str, Any],
    message: str,
) -> None:
    before, sent = _orders(sql), len(razorpay.calls_to("POST", "/v1/orders"))
    answer = client.post(ORDERS, headers=user[1], json=body)
    assert answer.status_code == 400
    assert answer.json()["error"] == "INVALID_INPUT" and answer.json()["message"] == message
    assert answer.json()["nextActions"]
    assert _orders(sql) == before and len(razorpay.calls_to("POST", "/v1/orders")) == sent


def test_an_order_needs_a_credential_and_keys(client: TestClient, admin: dict[str, str], sql: Sql) -> None:
    assert client.post(ORDERS, json={"amount": 100, "currency": "INR"}).status_code == 401
    client.delete("/api/payments/razorpay/live/config", headers=admin)
    before = _orders(sql)
    answer = client.post(
        "/api/payments/razorpay/live/orders",
        headers=anon_headers(client),
        json={"amount": 100, "currency": "INR"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "PAYMENT_CONFIG_NOT_FOUND"
    assert answer.json()["message"] == "Razorpay live keys are not configured"
    assert _orders(sql) == before


def test_an_order_razorpay_refuses_is_recorded_failed(
    client: TestClient, razorpay: FakeRazorpay, keys: None, sql: Sql, user: tuple[str, dict[str, str]]
) -> None:
    razorpay.fail_next("/v1/orders", 400, "Order amount less than minimum amount allowed")
    answer = client.post(ORDERS, headers=user[1], json={"amount": 1, "currency": "INR"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "UPSTREAM_FAILURE"
    assert answer.json()["message"] == "Order amount less than minimum amount allowed"
    row = sql("select status, last_error from payments.razorpay_orders order by created_at desc limit 1")[0]
    assert row == {"status": "failed", "last_error": "Order amount less than minimum amount allowed"}


def test_verifying_an_order_checks_razorpays_signature(
    client: TestClient, keys: None, user: tuple[str, dict[str, str]]
) -> None:
    _, headers = user
    order = client.post(ORDERS, headers=headers, json={"amount": 700, "currency": "INR"}).json()["order"]
    good = sign(TEST_KEY_SECRET, f"{order['orderId']}|pay_kilnbase0001")
    verify = ORDERS + "/verify"
    body = {"orderId": order["orderId"], "paymentId": "pay_kilnbase0001"}
    # A signature of other ids, by another secret, or not hex at all: refused, the order unchanged.
    for signature in (
        sign(TEST_KEY_SECRET, f"{order['orderId']}|pay_other"),
        sign("another_secret", f"{order['orderId']}|pay_kilnbase0001"),
        "not-a-signature",
        good.upper()[:-1],
    ):
        refused = client.post(verify, headers=headers, json={**body, "signature": signature})
        assert refused.status_code == 400
        assert refused.json()["message"] == "Invalid Razorpay payment signature"
    missing = client.post(verify, headers=headers, json=body)
    assert missing.status_code == 400 and missing.json()["message"] == "signature: Required"
    answer = client.post(verify, headers=headers, json={**body, "signature": good})
    assert answer.status_code == 200, answer.text
    verified = answer.json()
    assert verified["verified"] is True
    assert verified["order"]["status"] == "attempted"
    assert verified["order"]["verifiedPaymentId"] == "pay_kilnbase0001" and verified["order"]["verifiedAt"]
    unknown = {
        "orderId": "order_unknown",
        "paymentId": "pay_1",
        "signature": sign(TEST_KEY_SECRET, "order_unknown|pay_1"),
    }
    not_found = client.post(verify, headers=headers, json=unknown)
    assert not_found.status_code == 404
    assert not_found.json()["message"] == "Razorpay test order not found: order_unknown"


def test_the_admin_creates_and_updates_catalog_items_and_plans(
    client: TestClient, admin: dict[str, str], razorpay: FakeRazorpay, keys: None, sql: Sql
) -> None:
    created = client.post(
        BASE + "/catalog/items", headers=admin, json={"name": "Mug", "amount": 29900, "currency": "inr"}
    )
    assert created.status_code == 201, created.text
    item = created.json()["item"]
    assert item["name"] == "Mug" and item["amount"] == 29900 and item["currency"] == "INR"
    assert razorpay.calls_to("POST", "/v1/items")[-1].body == {
        "name": "Mug",
        "amount": 29900,
        "currency": "INR",
    }
    updated = client.patch(f"{BASE}/catalog/items/{item['itemId']}", headers=admin, json={"active": False})
    assert updated.status_code == 200 and updated.json()["item"]["active"] is False
    plan_id = _plan(client, admin)
    catalog = client.get(BASE + "/catalog", headers=admin).json()
    plan = next(p for p in catalog["plans"] if p["planId"] == plan_id)
    assert plan["period"] == "monthly" and plan["interval"] == 1 and plan["amount"] == 49900
    assert any(i["itemId"] == item["itemId"] and i["active"] is False for i in catalog["items"])
    actions = {r["action"] for r in sql("select action from system.audit_logs where module = 'PAYMENTS'")}
    assert {"CREATE_RAZORPAY_ITEM", "UPDATE_RAZORPAY_ITEM", "CREATE_RAZORPAY_PLAN"} <= actions


@pytest.mark.parametrize(
    ("path", "method", "body", "message"),
    [
        ("/catalog/items", "post", {"name": "Mug", "amount": 1}, "currency: Required"),
        ("/catalog/items/item_x", "patch", {}, "At least one item field is required"),
        ("/catalog/items/item%20x", "patch", {"active": True}, "The id is not a Razorpay item id"),
        (
            "/catalog/plans",
            "post",
            {"period": "hourly", "interval": 1, "item": {"name": "P", "amount": 1, "currency": "INR"}},
            "period: Invalid enum value. Expected 'daily' | 'weekly' | 'monthly' | 'yearly', "
            "received 'hourly'",
        ),
        (
            "/catalog/plans",
            "post",
            {"period": "daily", "interval": 1, "item": {"name": "P"}},
            "item.amount: Required, item.currency: Required",
        ),
    ],
)
def test_a_bad_catalog_change_is_a_400_that_sends_nothing(
    client: TestClient,
    admin: dict[str, str],
    razorpay: FakeRazorpay,
    keys: None,
    path: str,
    method: str,
    body: dict[str, Any],
    message: str,
) -> None:
    sent = len(razorpay.calls)
    answer = getattr(client, method)(BASE + path, headers=admin, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"] == message
    assert len(razorpay.calls) == sent


def test_the_catalog_is_the_admins(client: TestClient, keys: None, user: tuple[str, dict[str, str]]) -> None:
    _, headers = user
    assert client.get(BASE + "/catalog", headers=headers).status_code == 403
    assert client.post(BASE + "/catalog/items", headers=headers, json={}).status_code == 403
    assert client.get(BASE + "/transactions", headers=headers).status_code == 403


def test_a_user_subscribes_verifies_pauses_resumes_and_cancels(
    client: TestClient,
    admin: dict[str, str],
    razorpay: FakeRazorpay,
    keys: None,
    user: tuple[str, dict[str, str]],
) -> None:
    user_id, headers = user
    plan_id = _plan(client, admin)
    created = _subscribe(client, headers, plan_id, user_id)
    subscription = created["subscription"]
    assert subscription["status"] == "created" and subscription["planId"] == plan_id
    assert subscription["subjectType"] == "user" and subscription["subjectId"] == user_id
    assert created["checkoutOptions"] == {
        "key": TEST_KEY_ID,
        "subscription_id": subscription["subscriptionId"],
        "prefill": {},
    }
    sent = razorpay.calls_to("POST", "/v1/subscriptions")[-1].body
    assert sent == {
        "plan_id": plan_id,
        "total_count": 12,
        "notes": {"insforge_subject_type": "user", "insforge_subject_id": user_id},
    }
    sub_id = subscription["subscriptionId"]
    bad = {
        "subscriptionId": sub_id,
        "paymentId": "pay_auth01",
        "signature": sign(TEST_KEY_SECRET, f"{sub_id}|pay_auth01"),
    }
    refused = client.post(BASE + "/subscriptions/verify", headers=headers, json=bad)
    assert (
        refused.status_code == 400 and refused.json()["message"] == "Invalid Razorpay subscription signature"
    )
    good = {**bad, "signature": sign(TEST_KEY_SECRET, f"pay_auth01|{sub_id}")}
    verified = client.post(BASE + "/subscriptions/verify", headers=headers, json=good)
    assert verified.status_code == 200, verified.text
    assert verified.json()["subscription"]["status"] == "authenticated"
    assert verified.json()["subscription"]["authorizationPaymentId"] == "pay_auth01"
    paused = client.post(f"{BASE}/subscriptions/{sub_id}/pause", headers=headers)
    assert paused.status_code == 200 and paused.json()["subscription"]["status"] == "paused"
    assert razorpay.calls_to("POST", f"/v1/subscriptions/{sub_id}/pause")[-1].body == {"pause_at": "now"}
    resumed = client.post(f"{BASE}/subscriptions/{sub_id}/resume", headers=headers, json={})
    assert resumed.status_code == 200 and resumed.json()["subscription"]["status"] == "active"
    later = client.post(
        f"{BASE}/subscriptions/{sub_id}/cancel", headers=headers, json={"cancelAtCycleEnd": True}
    )
    assert later.status_code == 200 and later.json()["subscription"]["hasScheduledChanges"] is True
    assert razorpay.calls_to("POST", f"/v1/subscriptions/{sub_id}/cancel")[-1].body == {
        "cancel_at_cycle_end": 1
    }
    cancelled = client.post(f"{BASE}/subscriptions/{sub_id}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["subscription"]["status"] == "cancelled"
    listed = client.get(
        BASE + "/subscriptions", headers=admin, params={"subjectType": "user", "subjectId": user_id}
    )
    assert [s["status"] for s in listed.json()["subscriptions"]] == ["cancelled"]


def test_subscriptions_are_refused_to_the_anon_key_to_other_subjects_and_without_an_end(
    client: TestClient,
    admin: dict[str, str],
    razorpay: FakeRazorpay,
    keys: None,
    sql: Sql,
    user: tuple[str, dict[str, str]],
) -> None:
    user_id, headers = user
    plan_id = _plan(client, admin)
    sent = len(razorpay.calls_to("POST", "/v1/subscriptions"))
    mine = {"planId": plan_id, "totalCount": 3, "subject": {"type": "user", "id": user_id}}
    anon = client.post(BASE + "/subscriptions", headers=anon_headers(client), json=mine)
    assert anon.status_code == 401
    assert anon.json()["message"] == "Razorpay subscription creation requires a user token"
    other = {**mine, "subject": {"type": "team", "id": "t1"}}
    forbidden = client.post(BASE + "/subscriptions", headers=headers, json=other)
    assert forbidden.status_code == 403
    assert forbidden.json()["message"] == (
        "Razorpay subscription creation is not allowed by payments.razorpay_subscriptions RLS policies"
    )
    endless = client.post(
        BASE + "/subscriptions", headers=headers, json={k: v for k, v in mine.items() if k != "totalCount"}
    )
    assert (
        endless.status_code == 400 and endless.json()["message"] == "Either totalCount or endAt is required"
    )
    no_subject = client.post(
        BASE + "/subscriptions", headers=headers, json={"planId": plan_id, "totalCount": 1}
    )
    assert no_subject.status_code == 400 and no_subject.json()["message"] == "subject: Required"
    assert len(razorpay.calls_to("POST", "/v1/subscriptions")) == sent
    assert (
        sql(
            "select count(*) as n from payments.razorpay_subscriptions where subscription_id like 'sub_rls%%'"
        )[0]["n"]
        == 0
    )


def test_a_user_may_not_manage_another_users_subscription(
    client: TestClient,
    admin: dict[str, str],
    razorpay: FakeRazorpay,
    keys: None,
    user: tuple[str, dict[str, str]],
    sql: Sql,
) -> None:
    owner_id = str(uuid.uuid4())
    razorpay.add_subscription(
        subscription_entity(
            "sub_someoneelse01",
            "plan_x",
            "active",
            notes={"insforge_subject_type": "user", "insforge_subject_id": owner_id},
        )
    )
    assert client.post(BASE + "/sync", headers=admin).status_code == 200
    sent = len(razorpay.calls)
    answer = client.post(BASE + "/subscriptions/sub_someoneelse01/cancel", headers=user[1])
    assert answer.status_code == 404
    assert (
        answer.json()["message"]
        == "Razorpay test subscription not found or not manageable: sub_someoneelse01"
    )
    assert len(razorpay.calls) == sent
    assert sql(
        "select status from payments.razorpay_subscriptions where subscription_id = 'sub_someoneelse01'"
    ) == [{"status": "active"}]
    bad = client.post(BASE + "/subscriptions/sub_someoneelse01/pause", headers=user[1], json={"now": True})
    assert bad.status_code == 400 and bad.json()["message"] == "now: not a field of this request"
    # The admin may: the API key is the project's.
    assert client.post(BASE + "/subscriptions/sub_someoneelse01/pause", headers=admin).status_code == 200


def test_agent_keys_create_orders_with_payments_write(
    client: TestClient, admin: dict[str, str], keys: None, configured: Callable[..., None]
) -> None:
    writer = agent_headers(client, admin, ["payments:write"])
    assert client.post(ORDERS, headers=writer, json={"amount": 100, "currency": "INR"}).status_code == 201
    reader = agent_headers(client, admin, ["payments:read"])
    assert client.post(ORDERS, headers=reader, json={"amount": 100, "currency": "INR"}).status_code == 403
    listed = client.get(BASE + "/transactions", headers=reader)
    assert listed.status_code == 200 and "transactions" in listed.json()


def test_the_mcp_tools_reach_the_same_catalog_and_never_the_keys(
    client: TestClient, admin: dict[str, str], razorpay: FakeRazorpay, keys: None
) -> None:
    item = json.loads(
        mcp_call(
            client,
            admin,
            "create-razorpay-item",
            {"environment": "test", "name": "Poster", "amount": 9900, "currency": "INR"},
        )
    )["item"]
    plan = json.loads(
        mcp_call(
            client,
            admin,
            "create-razorpay-plan",
            {"environment": "test", "period": "yearly", "name": "Annual", "amount": 99900, "currency": "INR"},
        )
    )["plan"]
    assert razorpay.calls_to("POST", "/v1/plans")[-1].body["interval"] == 1
    listed = json.loads(mcp_call(client, admin, "list-razorpay-catalog", {"environment": "test"}))
    assert item["itemId"] in {i["itemId"] for i in listed["items"]}
    assert plan["planId"] in {p["planId"] for p in listed["plans"]}
    synced = json.loads(mcp_call(client, admin, "sync-razorpay-payments", {"environment": "test"}))
    assert synced["results"][0]["status"] == "succeeded"
    status = mcp_call(client, admin, "get-razorpay-status", {})
    assert (
        TEST_KEY_SECRET not in status
        and json.loads(status)["razorpayConnections"][0]["status"] == "connected"
    )
    history = json.loads(mcp_call(client, admin, "list-razorpay-transactions", {"environment": "test"}))
    assert "transactions" in history
    subscriptions = json.loads(
        mcp_call(client, admin, "list-razorpay-subscriptions", {"environment": "test"})
    )
    assert "subscriptions" in subscriptions


_RAZORPAY_DOWN = (
    "Try again in a moment; if it persists, check Razorpay's status page and KILNBASE_RAZORPAY_API_BASE."
)


@pytest.mark.parametrize(
    ("status", "answered"),
    [
        (429, (429, "RATE_LIMITED", "Wait a moment and try again.")),
        (
            401,
            (
                400,
                "PAYMENT_CONFIG_INVALID",
                "Set valid keys for this environment with PUT /api/payments/razorpay/:environment/config.",
            ),
        ),
        (400, (400, "UPSTREAM_FAILURE", "Check the ids and values sent against the Razorpay dashboard.")),
        (502, (502, "UPSTREAM_FAILURE", _RAZORPAY_DOWN)),
    ],
)
def test_a_refusal_of_razorpay_is_answered_with_insforges_code_and_razorpays_description(
    client: TestClient,
    admin: dict[str, str],
    razorpay: FakeRazorpay,
    keys: None,
    status: int,
    answered: tuple[int, str, str],
) -> None:
    razorpay.fail_next("/v1/items", status, "The item could not be created right now")
    answer = client.post(
        BASE + "/catalog/items", headers=admin, json={"name": "Mug", "amount": 29900, "currency": "inr"}
    )
    assert answer.json() == {
        "error": answered[1],
        "message": "The item could not be created right now",
        "statusCode": answered[0],
        "nextActions": answered[2],
    }


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, b"<html>maintenance</html>", "Razorpay answered something that is not JSON."),
        (500, b"upstream connect error", "Razorpay request failed"),
        (200, None, "Razorpay could not be reached (RemoteProtocolError)."),
    ],
)
def test_a_razorpay_that_answers_no_json_or_hangs_up_is_a_502_that_names_no_key(
    client: TestClient,
    admin: dict[str, str],
    razorpay: FakeRazorpay,
    keys: None,
    status: int,
    body: bytes | None,
    message: str,
) -> None:
    razorpay.garble_next("/v1/items", status, body)
    answer = client.post(
        BASE + "/catalog/items", headers=admin, json={"name": "Mug", "amount": 29900, "currency": "inr"}
    )
    assert answer.status_code == 502, answer.text
    assert answer.json() == {
        "error": "UPSTREAM_FAILURE",
        "message": message,
        "statusCode": 502,
        "nextActions": _RAZORPAY_DOWN,
    }
