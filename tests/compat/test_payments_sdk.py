"""`@insforge/sdk`'s `payments.stripe` methods, unchanged, against a running Kilnbase server whose Stripe is
the loopback fake: a signed-up user starts a checkout (and is refused a portal before paying)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support.fake_stripe import FakeStripe
from tests.support.node import run_node
from tests.support.servers import ServerProcess

if TYPE_CHECKING:
    from tests.support.postgres import TestCluster

SCRIPT = """
import { createClient } from '@insforge/sdk';
const base = { baseUrl: process.env.BASE_URL, anonKey: process.env.ANON_KEY };
const signUp = await createClient({ ...base, isServerMode: true }).auth.signUp(
  { email: 'buyer@example.com', password: 'correct horse 1' });
if (signUp.error) throw new Error(signUp.error.message);
const user = createClient({ ...base, accessToken: signUp.data.accessToken });
const me = signUp.data.user.id;
const out = { me };
const checkout = await user.payments.stripe.createCheckoutSession('test', {
  mode: 'subscription',
  lineItems: [{ priceId: 'price_sdk_pro', quantity: 1 }],
  successUrl: 'https://app.example.com/success',
  cancelUrl: 'https://app.example.com/pricing',
  subject: { type: 'user', id: me },
  idempotencyKey: 'sdk-order-1',
});
out.checkout = checkout.data;
out.checkoutError = checkout.error;
const portal = await user.payments.stripe.createCustomerPortalSession('test', {
  subject: { type: 'user', id: me }, returnUrl: 'https://app.example.com/account' });
out.portalError = portal.error && { statusCode: portal.error.statusCode, error: portal.error.error };
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def server(
    cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, str], FakeStripe]]:
    stripe = FakeStripe().start()
    stripe.add_price("price_sdk_pro", "prod_sdk_pro", 1900, "month")
    env = {
        "DATABASE_URL": cluster.create_database("paymentssdk"),
        "KILNBASE_STRIPE_API_BASE": stripe.url,
        "KILNBASE_AUTH_ARGON2_TIME_COST": "2",
        "KILNBASE_AUTH_ARGON2_MEMORY_COST_KIB": "19456",
        "KILNBASE_AUTH_ARGON2_PARALLELISM": "1",
    }
    process = ServerProcess(tmp_path_factory.mktemp("paymentssdk") / "data", env=env)
    process.start()
    stored = json.loads((process.data_dir / "keys.json").read_text())
    keys = {"url": process.url, "apiKey": stored["api_key"], "anonKey": stored["anon_key"]}
    with httpx.Client(base_url=process.url, headers={"Authorization": f"Bearer {keys['apiKey']}"}) as http:
        configured = http.put(
            "/api/payments/stripe/test/config", json={"secretKey": "sk_test_sdk_compat_0001"}
        )
        assert configured.status_code == 200, configured.text
    yield keys, stripe
    process.stop()
    stripe.stop()


def test_the_sdk_starts_a_stripe_checkout_unchanged(server: tuple[dict[str, str], FakeStripe]) -> None:
    keys, stripe = server
    out: dict[str, Any] = run_node(SCRIPT, {"BASE_URL": keys["url"], "ANON_KEY": keys["anonKey"]})
    assert out["checkoutError"] is None
    session = out["checkout"]["checkoutSession"]
    assert session["mode"] == "subscription" and session["status"] == "open"
    assert session["subjectType"] == "user" and session["subjectId"] == out["me"]
    assert session["url"].startswith("https://checkout.stripe.com/c/pay/cs_test_")
    sent = stripe.calls_to("POST", "/v1/checkout/sessions")[-1]
    assert sent.form["line_items[0][price]"] == "price_sdk_pro"
    assert sent.form["subscription_data[metadata][insforge_subject_id]"] == out["me"]
    assert sent.headers["idempotency-key"] == "kilnbase:test:checkout_session:sdk-order-1"
    # No checkout has completed yet: the subject has no Stripe customer for a portal.
    assert out["portalError"] == {"statusCode": 404, "error": "PAYMENT_NOT_FOUND"}
