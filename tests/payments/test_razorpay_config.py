"""The Razorpay keys: set (checked with Razorpay, stored encrypted), answered masked, removed; the webhook
setup and its secret's rotation; sync of the catalog; refused to agent keys and to anyone but the admin."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.payments import stripe_calls
from tests.payments.razorpay_calls import (
    LIVE_KEY_ID,
    LIVE_KEY_SECRET,
    TEST_KEY_ID,
    TEST_KEY_SECRET,
    WEBHOOK_SECRET,
    configure,
    event,
    post_event,
)
from tests.support.app import agent_headers, anon_headers
from tests.support.fake_razorpay import FakeRazorpay
from tests.support.fake_stripe import FakeStripe
from tests.support.side_sql import Sql

BASE = "/api/payments/razorpay"


def _remove(client: TestClient, admin: dict[str, str], environment: str) -> None:
    answer = client.delete(f"{BASE}/{environment}/config", headers=admin)
    assert answer.status_code in (200, 404), answer.text


def _secrets(sql: Sql, environment: str) -> list[dict[str, object]]:
    return sql(
        "select * from payments.provider_secrets where provider = 'razorpay' and environment = %s",
        environment,
    )


def test_setting_keys_checks_them_with_razorpay_stores_them_encrypted_and_answers_them_masked(
    client: TestClient, admin: dict[str, str], razorpay: FakeRazorpay, sql: Sql
) -> None:
    _remove(client, admin, "live")
    answer = configure(client, admin, "live")
    assert answer.status_code == 200, answer.text
    keys = answer.json()["keys"]
    assert {"environment": "live", "keyType": "api_key", "value": "rzp_live_****0002"} in keys
    assert {"environment": "live", "keyType": "api_secret", "value": "****"} in keys
    assert {"environment": "live", "keyType": "webhook_secret", "value": "****"} in keys
    assert LIVE_KEY_SECRET not in answer.text and WEBHOOK_SECRET not in answer.text
    # Razorpay was asked with the key pair (HTTP basic auth) before anything was kept.
    probe = razorpay.calls_to("GET", "/v1/orders")[-1]
    assert probe.key_id == LIVE_KEY_ID and probe.query == {"count": "1", "skip": "0"}
    stored = _secrets(sql, "live")[0]
    assert LIVE_KEY_SECRET not in str(stored) and LIVE_KEY_ID not in str(stored)
    status = client.get(f"{BASE}/status", headers=admin)
    assert status.status_code == 200
    live = next(c for c in status.json()["razorpayConnections"] if c["environment"] == "live")
    assert live["status"] == "connected" and live["accountId"] == LIVE_KEY_ID
    assert live["maskedKey"] == "rzp_live_****0002" and live["accountLivemode"] is True
    assert live["merchantName"] is None and live["lastSyncStatus"] == "succeeded"
    assert set(live["lastSyncCounts"]) == {
        "plans",
        "items",
        "customers",
        "subscriptions",
        "invoices",
        "payments",
    }


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        (
            {"keyId": TEST_KEY_ID, "keySecret": TEST_KEY_SECRET},
            400,
            "PAYMENT_CONFIG_INVALID",
            'Razorpay key ID must start with "rzp_live_" for the live environment',
        ),
        ({"keyId": LIVE_KEY_ID}, 400, "INVALID_INPUT", "keySecret: Required"),
        (
            {"keyId": LIVE_KEY_ID, "keySecret": "x", "secretKey": "y"},
            400,
            "INVALID_INPUT",
            "secretKey: not a field of this request",
        ),
        (
            {"keyId": LIVE_KEY_ID, "keySecret": "bad_secret"},
            400,
            "PAYMENT_CONFIG_INVALID",
            "Authentication failed",
        ),
    ],
)
def test_keys_that_are_wrong_are_refused_and_change_nothing(
    client: TestClient,
    admin: dict[str, str],
    sql: Sql,
    body: dict[str, str],
    status: int,
    code: str,
    message: str,
) -> None:
    _remove(client, admin, "live")
    answer = client.put(f"{BASE}/live/config", headers=admin, json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == code and answer.json()["message"] == message
    assert answer.json()["nextActions"]
    assert _secrets(sql, "live") == []


def test_an_unknown_environment_is_a_400(client: TestClient, admin: dict[str, str]) -> None:
    answer = client.put(f"{BASE}/prod/config", headers=admin, json={"keyId": "a", "keySecret": "b"})
    assert answer.status_code == 400
    assert (
        answer.json()["message"]
        == "environment: Invalid enum value. Expected 'test' | 'live', received 'prod'"
    )
    assert "/api/payments/razorpay/test" in answer.json()["nextActions"]


def test_removing_keys_answers_404_when_none_are_set_and_leaves_the_connection_unconfigured(
    client: TestClient, admin: dict[str, str], sql: Sql
) -> None:
    assert configure(client, admin, "live").status_code == 200
    removed = client.delete(f"{BASE}/live/config", headers=admin)
    assert removed.status_code == 200
    assert {"environment": "live", "keyType": "api_key", "value": None} in removed.json()["keys"]
    assert _secrets(sql, "live") == []
    again = client.delete(f"{BASE}/live/config", headers=admin)
    assert again.status_code == 404
    assert again.json() | {"nextActions": None} == {
        "error": "PAYMENT_CONFIG_NOT_FOUND",
        "message": "No Razorpay keys configured for this environment",
        "statusCode": 404,
        "nextActions": None,
    }
    live = client.get(f"{BASE}/status", headers=admin).json()["razorpayConnections"][1]
    assert (
        live["status"] == "unconfigured" and live["lastSyncError"] == "Razorpay live keys are not configured"
    )


def test_agent_keys_may_not_touch_the_keys_or_the_webhook_secret_but_read_the_status(
    client: TestClient, admin: dict[str, str], sql: Sql
) -> None:
    assert configure(client, admin, "test").status_code == 200
    agent = agent_headers(client, admin, ["payments:read", "payments:write"])
    refused = [
        client.put(f"{BASE}/live/config", headers=agent, json={"keyId": LIVE_KEY_ID, "keySecret": "s"}),
        client.get(f"{BASE}/config", headers=agent),
        client.delete(f"{BASE}/test/config", headers=agent),
        client.get(f"{BASE}/test/webhook", headers=agent),
        client.post(f"{BASE}/test/webhook/rotate-secret", headers=agent),
    ]
    assert [r.status_code for r in refused] == [403] * 5
    assert all(r.json()["nextActions"] for r in refused)
    assert len(_secrets(sql, "test")) == 1
    assert client.get(f"{BASE}/status", headers=agent).status_code == 200
    reader = agent_headers(client, admin, ["payments:read"])
    assert client.post(f"{BASE}/test/catalog/items", headers=reader, json={}).status_code == 403


def test_only_the_admin_reads_the_status_and_the_config(client: TestClient) -> None:
    anon = anon_headers(client)
    assert client.get(f"{BASE}/status").status_code == 401
    assert client.get(f"{BASE}/status", headers=anon).status_code in (401, 403)
    assert client.get(f"{BASE}/config", headers=anon).status_code in (401, 403)
    assert client.post(f"{BASE}/sync", headers=anon).status_code in (401, 403)


def test_the_webhook_setup_answers_the_url_and_a_secret_that_rotation_replaces(
    client: TestClient, admin: dict[str, str], sql: Sql
) -> None:
    assert configure(client, admin, "test", webhookSecret=None).status_code == 200
    setup = client.get(f"{BASE}/test/webhook", headers=admin)
    assert setup.status_code == 200, setup.text
    body = setup.json()
    assert body["webhookUrl"].endswith("/api/webhooks/razorpay/test")
    assert body["connection"]["webhookEndpointId"] == "manual"
    assert body["connection"]["webhookEndpointUrl"] == body["webhookUrl"]
    assert client.get(f"{BASE}/test/webhook", headers=admin).json()["webhookSecret"] == body["webhookSecret"]
    rotated = client.post(f"{BASE}/test/webhook/rotate-secret", headers=admin)
    assert rotated.status_code == 200
    assert rotated.json()["webhookSecret"] not in (body["webhookSecret"], "")
    assert (
        client.get(f"{BASE}/test/webhook", headers=admin).json()["webhookSecret"]
        == rotated.json()["webhookSecret"]
    )
    actions = sql(
        "select action from system.audit_logs where module = 'PAYMENTS' and action like %s",
        "%RAZORPAY_WEBHOOK%",
    )
    assert {"GET_RAZORPAY_WEBHOOK_SETUP", "ROTATE_RAZORPAY_WEBHOOK_SECRET"} <= {a["action"] for a in actions}


def test_the_webhook_setup_needs_keys(client: TestClient, admin: dict[str, str]) -> None:
    _remove(client, admin, "live")
    answer = client.get(f"{BASE}/live/webhook", headers=admin)
    assert answer.status_code == 400
    assert answer.json()["error"] == "PAYMENT_CONFIG_NOT_FOUND"
    assert answer.json()["message"] == "Razorpay live keys are not configured"


def test_sync_mirrors_items_plans_and_subscriptions_and_reports_an_environment_without_keys(
    client: TestClient, admin: dict[str, str], razorpay: FakeRazorpay
) -> None:
    assert configure(client, admin, "test").status_code == 200
    _remove(client, admin, "live")
    razorpay.items["item_synced0001"] = {
        "id": "item_synced0001",
        "active": True,
        "name": "Sticker",
        "description": None,
        "amount": 500,
        "unit_amount": 500,
        "currency": "INR",
        "type": "invoice",
        "created_at": 1_767_225_600,
    }
    answer = client.post(f"{BASE}/sync", headers=admin)
    assert answer.status_code == 200, answer.text
    test, live = answer.json()["results"]
    assert test["status"] == "succeeded" and test["error"] is None
    assert test["syncCounts"]["items"] == len(razorpay.items)
    assert test["connection"]["lastSyncStatus"] == "succeeded"
    assert live == live | {"status": "failed", "error": "Razorpay live keys are not configured"}
    assert live["connection"]["status"] == "unconfigured"
    catalog = client.get(f"{BASE}/test/catalog", headers=admin).json()
    assert {
        "environment": "test",
        "itemId": "item_synced0001",
        "name": "Sticker",
        "description": None,
        "active": True,
        "amount": 500,
        "unitAmount": 500,
        "currency": "INR",
        "type": "invoice",
        "providerCreatedAt": "2026-01-01T00:00:00.000Z",
    }.items() <= next(i for i in catalog["items"] if i["itemId"] == "item_synced0001").items()


def test_a_sync_razorpay_fails_is_recorded_on_the_connection(
    client: TestClient, admin: dict[str, str], razorpay: FakeRazorpay
) -> None:
    assert configure(client, admin, "test").status_code == 200
    razorpay.fail_next("/v1/items", 500, "Razorpay is down")
    answer = client.post(f"{BASE}/test/sync", headers=admin)
    assert answer.status_code == 200
    (result,) = answer.json()["results"]
    assert result["status"] == "failed" and result["error"] == "Razorpay is down"
    assert result["connection"]["lastSyncStatus"] == "failed"
    assert result["connection"]["lastSyncError"] == "Razorpay is down"


def test_keys_of_another_razorpay_account_clear_what_was_recorded_for_the_first(
    client: TestClient, admin: dict[str, str], sql: Sql
) -> None:
    _remove(client, admin, "live")
    assert configure(client, admin, "live").status_code == 200
    payment = {
        "id": "pay_first_account",
        "entity": "payment",
        "amount": 100,
        "currency": "INR",
        "status": "captured",
    }
    captured = post_event(
        client, event("payment.captured", payment=payment), environment="live", event_id="evt_a1"
    )
    assert captured.status_code == 200
    recorded = (
        "select count(*) as n from payments.transactions where environment = 'live' "
        "and provider_object_id = 'pay_first_account'"
    )
    assert sql(recorded)[0]["n"] == 1
    # The same key id again (a new secret) keeps it; another account's key id clears it.
    assert configure(client, admin, "live", keySecret="rotated_secret").status_code == 200
    assert sql(recorded)[0]["n"] == 1
    assert configure(client, admin, "live", keyId="rzp_live_otheraccount").status_code == 200
    assert sql(recorded)[0]["n"] == 0
    events = (
        "select count(*) as n from payments.webhook_events "
        "where provider = 'razorpay' and environment = 'live'"
    )
    assert sql(events)[0]["n"] == 0


def test_sync_maps_customers_and_records_payments_and_names_a_stage_that_failed(
    client: TestClient, admin: dict[str, str], razorpay: FakeRazorpay, sql: Sql
) -> None:
    assert configure(client, admin, "test").status_code == 200
    notes = {"insforge_subject_type": "team", "insforge_subject_id": "t-sync"}
    razorpay.customers["cust_synced0001"] = {"id": "cust_synced0001", "entity": "customer", "notes": notes}
    razorpay.payments["pay_synced0001"] = {
        "id": "pay_synced0001",
        "entity": "payment",
        "amount": 1200,
        "currency": "INR",
        "status": "captured",
        "customer_id": "cust_synced0001",
        "created_at": 1_767_225_600,
    }
    (result,) = client.post(f"{BASE}/test/sync", headers=admin).json()["results"]
    assert result["status"] == "succeeded" and result["error"] is None
    assert result["syncCounts"]["customers"] == len(razorpay.customers)
    assert result["syncCounts"]["payments"] == len(razorpay.payments)
    assert sql(
        "select status, subject_type, subject_id from payments.transactions where provider_object_id = %s",
        "pay_synced0001",
    ) == [{"status": "succeeded", "subject_type": "team", "subject_id": "t-sync"}]
    razorpay.fail_next("/v1/payments", 500, "Payments listing is down")
    (failed,) = client.post(f"{BASE}/test/sync", headers=admin).json()["results"]
    assert failed["status"] == "failed" and failed["error"] == "payments: Payments listing is down"
    assert (
        failed["syncCounts"]["customers"] == len(razorpay.customers) and failed["syncCounts"]["payments"] == 0
    )
    assert failed["connection"]["lastSyncError"] == "payments: Payments listing is down"


def test_a_razorpay_answer_kilnbase_cannot_store_fails_the_sync_not_the_server(
    client: TestClient, admin: dict[str, str], razorpay: FakeRazorpay
) -> None:
    assert configure(client, admin, "test").status_code == 200
    item_id = "item_huge0001"
    razorpay.items[item_id] = {
        "id": item_id,
        "name": "Huge",
        "amount": 2**63,
        "currency": "INR",
        "active": True,
    }
    try:
        answer = client.post(f"{BASE}/test/sync", headers=admin)
    finally:
        del razorpay.items[item_id]
    assert answer.status_code == 200, answer.text
    (result,) = answer.json()["results"]
    assert result["status"] == "failed"
    assert result["error"] == "Razorpay answered a value Kilnbase cannot store: bigint out of range"
    catalog = client.get(f"{BASE}/test/catalog", headers=admin).json()
    assert all(item["itemId"] != "item_huge0001" for item in catalog["items"])


def test_a_key_of_another_stripe_account_leaves_what_razorpay_recorded(
    client: TestClient, admin: dict[str, str], stripe: FakeStripe, sql: Sql
) -> None:
    _remove(client, admin, "live")
    assert configure(client, admin, "live").status_code == 200
    payment = {"id": "pay_beside_stripe", "entity": "payment", "amount": 100, "currency": "INR"}
    captured = post_event(
        client,
        event("payment.captured", payment={**payment, "status": "captured"}),
        environment="live",
        event_id="evt_beside_stripe",
    )
    assert captured.status_code == 200, captured.text
    stripe_config = "/api/payments/stripe/live/config"
    first = client.put(stripe_config, headers=admin, json={"secretKey": stripe_calls.LIVE_KEY})
    assert first.status_code == 200, first.text
    stripe.accounts["sk_live_third_account_7777"] = "acct_third"
    changed = client.put(stripe_config, headers=admin, json={"secretKey": "sk_live_third_account_7777"})
    assert changed.status_code == 200, changed.text
    history = client.get(f"{BASE}/live/transactions", headers=admin).json()["transactions"]
    assert "pay_beside_stripe" in [t["providerReferenceId"] for t in history]
    events = "select provider from payments.webhook_events where provider_event_id = 'evt_beside_stripe'"
    assert sql(events) == [{"provider": "razorpay"}]
    assert len(_secrets(sql, "live")) == 1
    status = client.get(f"{BASE}/status", headers=admin).json()["razorpayConnections"]
    live = next(c for c in status if c["environment"] == "live")
    assert (live["status"], live["accountId"]) == ("connected", LIVE_KEY_ID)
