"""The catalog: mirrored from Stripe (sync, paging included), changed through Stripe (products and prices)
and read from the mirror; what was sent to Stripe; refusals; agent keys by scope; the MCP tools."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.support.app import agent_headers, mcp_call
from tests.support.fake_stripe import FakeStripe

CATALOG = "/api/payments/stripe/test/catalog"


def test_a_sync_mirrors_every_page_of_the_stripe_catalog(
    client: TestClient, admin: dict[str, str], stripe: FakeStripe, configured: Callable[..., None]
) -> None:
    configured()
    tag = uuid.uuid4().hex[:8]
    for n in range(105):  # (more than one page of 100)
        stripe.add_price(f"price_{tag}_{n}", f"prod_{tag}_{n % 3}", 100 + n)
    answer = client.post("/api/payments/stripe/test/sync", headers=admin)
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert result["environment"] == "test" and result["connection"]["lastSyncStatus"] == "succeeded"
    assert result["connection"]["lastSyncCounts"]["prices"] >= 105
    catalog = client.get(CATALOG, headers=admin).json()
    assert {f"price_{tag}_{n}" for n in range(105)} <= {p["priceId"] for p in catalog["prices"]}
    product = client.get(f"{CATALOG}/products/prod_{tag}_1", headers=admin)
    assert product.status_code == 200
    assert product.json()["product"]["productId"] == f"prod_{tag}_1"
    assert len(product.json()["prices"]) == 35
    filtered = client.get(f"{CATALOG}/prices", headers=admin, params={"productId": f"prod_{tag}_2"}).json()
    assert len(filtered["prices"]) == 35
    # A product gone from Stripe goes from the mirror at the next sync.
    del stripe.products[f"prod_{tag}_0"]
    assert client.post("/api/payments/stripe/sync", headers=admin).status_code == 200
    assert client.get(f"{CATALOG}/products/prod_{tag}_0", headers=admin).status_code == 404


def test_products_and_prices_are_made_changed_and_archived_through_stripe(
    client: TestClient, admin: dict[str, str], stripe: FakeStripe, configured: Callable[..., None]
) -> None:
    configured()
    created = client.post(
        f"{CATALOG}/products",
        headers=admin,
        json={
            "name": "Pro plan",
            "description": "Everything",
            "metadata": {"tier": "pro"},
            "idempotencyKey": "p1",
        },
    )
    assert created.status_code == 201, created.text
    product = created.json()["product"]
    sent = stripe.calls_to("POST", "/v1/products")[-1]
    assert sent.form == {"name": "Pro plan", "description": "Everything", "metadata[tier]": "pro"}
    assert sent.headers["idempotency-key"] == "kilnbase:test:product:p1"
    assert product["name"] == "Pro plan" and product["metadata"] == {"tier": "pro"}
    changed = client.patch(f"{CATALOG}/products/{product['productId']}", headers=admin, json={"name": "Pro"})
    assert changed.status_code == 200 and changed.json()["product"]["name"] == "Pro"
    price = client.post(
        f"{CATALOG}/prices",
        headers=admin,
        json={
            "productId": product["productId"],
            "currency": "USD",
            "unitAmount": 1900,
            "recurring": {"interval": "month"},
        },
    )
    assert price.status_code == 201, price.text
    assert (
        price.json()["price"]["recurringInterval"] == "month" and price.json()["price"]["currency"] == "usd"
    )
    sent = stripe.calls_to("POST", "/v1/prices")[-1]
    assert sent.form == {
        "product": product["productId"],
        "currency": "usd",
        "unit_amount": "1900",
        "recurring[interval]": "month",
    }
    price_id = price.json()["price"]["priceId"]
    archived = client.delete(f"{CATALOG}/prices/{price_id}", headers=admin)
    assert archived.status_code == 200
    assert archived.json()["archived"] is True and archived.json()["price"]["active"] is False
    assert stripe.calls_to("POST", f"/v1/prices/{price_id}")[-1].form == {"active": "false"}
    deleted = client.delete(f"{CATALOG}/products/{product['productId']}", headers=admin)
    assert deleted.json() == {"productId": product["productId"], "deleted": True}
    assert client.get(f"{CATALOG}/products/{product['productId']}", headers=admin).status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("products", {}, "name: Required"),
        ("products", {"name": "x", "price": 5}, "price: not a field of this request"),
        (
            "products",
            {"name": "x", "metadata": {"insforge_x": "y"}},
            "metadata: Metadata keys starting with insforge_ are reserved",
        ),
        (
            "prices",
            {"productId": "prod_1", "currency": "us", "unitAmount": 5},
            "currency: Currency must be a three-letter ISO currency code",
        ),
        (
            "prices",
            {"productId": "prod_1", "currency": "usd", "unitAmount": -1},
            "unitAmount: an integer from 0 to 99999999999",
        ),
        (
            "prices",
            {"productId": "prod_1", "currency": "usd", "unitAmount": 1.5},
            "unitAmount: an integer from 0 to 99999999999",
        ),
        (
            "prices",
            {"productId": "prod_1", "currency": "usd", "unitAmount": 5, "recurring": {"interval": "hour"}},
            "recurring.interval: Invalid enum value. Expected 'day' | 'week' | 'month' | 'year', received "
            "'hour'",
        ),
    ],
)
def test_a_bad_catalog_change_is_a_400_and_stripe_is_not_called(
    client: TestClient,
    admin: dict[str, str],
    stripe: FakeStripe,
    configured: Callable[..., None],
    path: str,
    body: dict[str, Any],
    message: str,
) -> None:
    configured()
    before = len(stripe.calls)
    answer = client.post(f"{CATALOG}/{path}", headers=admin, json=body)
    assert answer.status_code == 400
    assert answer.json()["message"] == message
    assert len(stripe.calls) == before


def test_unknown_products_and_prices_are_404_and_an_empty_update_is_400(
    client: TestClient, admin: dict[str, str], stripe: FakeStripe, configured: Callable[..., None]
) -> None:
    configured()
    assert (
        client.get(f"{CATALOG}/products/prod_nothing", headers=admin).json()["error"]
        == "PAYMENT_PRODUCT_NOT_FOUND"
    )
    assert (
        client.get(f"{CATALOG}/prices/price_nothing", headers=admin).json()["error"]
        == "PAYMENT_PRICE_NOT_FOUND"
    )
    stripe_404 = client.patch(f"{CATALOG}/products/prod_nothing", headers=admin, json={"name": "x"})
    assert stripe_404.status_code == 404 and stripe_404.json()["message"] == "No such product: 'prod_nothing'"
    empty = client.patch(f"{CATALOG}/products/prod_nothing", headers=admin, json={})
    assert empty.status_code == 400 and empty.json()["message"] == "At least one product field is required"
    odd = client.patch(f"{CATALOG}/prices/price%20x", headers=admin, json={"active": False})
    assert odd.status_code == 400 and odd.json()["message"] == "The id is not a Stripe id"
    unknown = client.get(f"{CATALOG}/prices", headers=admin, params={"product": "x"})
    assert unknown.status_code == 400


def test_without_a_key_catalog_changes_are_400(
    client: TestClient, admin: dict[str, str], unconfigured: Callable[[str], None]
) -> None:
    unconfigured("live")
    answer = client.post("/api/payments/stripe/live/catalog/products", headers=admin, json={"name": "x"})
    assert answer.status_code == 400 and answer.json()["error"] == "PAYMENT_CONFIG_INVALID"
    assert client.post("/api/payments/stripe/live/sync", headers=admin).status_code == 400


def test_agent_keys_read_with_payments_read_and_change_the_catalog_with_payments_write(
    client: TestClient, admin: dict[str, str], configured: Callable[..., None]
) -> None:
    configured()
    reader = agent_headers(client, admin, ["payments:read"])
    assert client.get(CATALOG, headers=reader).status_code == 200
    assert client.post(f"{CATALOG}/products", headers=reader, json={"name": "x"}).status_code == 403
    other = agent_headers(client, admin, ["database:read"])
    assert client.get(CATALOG, headers=other).status_code == 403
    writer = agent_headers(client, admin, ["payments:write"])
    assert client.post(f"{CATALOG}/products", headers=writer, json={"name": "By agent"}).status_code == 201


def test_the_mcp_tools_read_and_change_the_catalog(
    client: TestClient, admin: dict[str, str], stripe: FakeStripe, configured: Callable[..., None]
) -> None:
    configured()
    made = json.loads(
        mcp_call(client, admin, "create-stripe-product", {"environment": "test", "name": "Via MCP"})
    )
    product_id = made["product"]["productId"]
    priced = mcp_call(
        client,
        admin,
        "create-stripe-price",
        {
            "environment": "test",
            "productId": product_id,
            "currency": "eur",
            "unitAmount": 500,
            "interval": "year",
        },
    )
    assert json.loads(priced)["price"]["recurringInterval"] == "year"
    listed = json.loads(mcp_call(client, admin, "list-stripe-catalog", {"environment": "test"}))
    assert product_id in {p["productId"] for p in listed["products"]}
    status = json.loads(mcp_call(client, admin, "get-payments-status", {}))
    assert "sk_test_kilnbase_payments_0001" not in json.dumps(status)


_STRIPE_DOWN = (
    "Try again in a moment; if it persists, check Stripe's status page and KILNBASE_STRIPE_API_BASE."
)


@pytest.mark.parametrize(
    ("status", "error", "answered"),
    [
        (
            429,
            {"type": "invalid_request_error", "message": "Too many requests"},
            (429, "RATE_LIMITED", "Too many requests", "Wait a moment and try again."),
        ),
        (
            401,
            {"type": "invalid_request_error", "message": "Expired API Key provided"},
            (
                400,
                "PAYMENT_CONFIG_INVALID",
                "Expired API Key provided",
                "Set a valid key for this environment with PUT /api/payments/stripe/:environment/config.",
            ),
        ),
        (
            402,
            {"type": "card_error", "message": "Your card was declined."},
            (402, "PAYMENT_METHOD_DECLINED", "Your card was declined.", "Use another payment method."),
        ),
        (
            404,
            {"type": "invalid_request_error", "message": "No such tax code: txcd_0"},
            (
                404,
                "UPSTREAM_FAILURE",
                "No such tax code: txcd_0",
                "Check the ids and values sent against the Stripe dashboard.",
            ),
        ),
        (500, {"type": "api_error"}, (502, "UPSTREAM_FAILURE", "Stripe request failed", _STRIPE_DOWN)),
    ],
)
def test_a_refusal_of_stripe_is_answered_with_insforges_code_and_stripes_message(
    client: TestClient,
    admin: dict[str, str],
    stripe: FakeStripe,
    configured: Callable[..., None],
    status: int,
    error: dict[str, Any],
    answered: tuple[int, str, str, str],
) -> None:
    configured()
    stripe.fail_next("/v1/products", status, error)
    answer = client.post(f"{CATALOG}/products", headers=admin, json={"name": f"Mug {uuid.uuid4().hex[:6]}"})
    body = answer.json()
    assert (answer.status_code, body["error"], body["message"], body["nextActions"]) == answered
    assert body["statusCode"] == answered[0]


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, b"<html>maintenance</html>", "Stripe answered something that is not JSON."),
        (503, b"upstream connect error", "Stripe request failed"),
        (200, None, "Stripe could not be reached (RemoteProtocolError)."),
    ],
)
def test_a_stripe_that_answers_no_json_or_hangs_up_is_a_502_that_names_no_key(
    client: TestClient,
    admin: dict[str, str],
    stripe: FakeStripe,
    configured: Callable[..., None],
    status: int,
    body: bytes | None,
    message: str,
) -> None:
    configured()
    stripe.garble_next("/v1/products", status, body)
    answer = client.post(f"{CATALOG}/products", headers=admin, json={"name": f"Mug {uuid.uuid4().hex[:6]}"})
    assert answer.status_code == 502, answer.text
    assert answer.json() == {
        "error": "UPSTREAM_FAILURE",
        "message": message,
        "statusCode": 502,
        "nextActions": _STRIPE_DOWN,
    }
