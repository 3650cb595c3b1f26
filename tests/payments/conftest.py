"""Fixtures of the payments tests: an app whose Stripe and Razorpay are loopback fakes
(`tests/support/fake_stripe.py`, `fake_razorpay.py`),
the API key's headers, and helpers that give an environment its key (each test sets what it needs: tests
never depend on one another's state)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from kilnbase.config import Settings
from tests.payments.stripe_calls import LIVE_KEY, TEST_KEY, WEBHOOK_SECRET
from tests.support.app import admin_headers, user_headers
from tests.support.fake_razorpay import FakeRazorpay
from tests.support.fake_stripe import FakeStripe
from tests.support.side_sql import Sql, sql_runner


@pytest.fixture(scope="module")
def stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def razorpay() -> Iterator[FakeRazorpay]:
    fake = FakeRazorpay().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, stripe: FakeStripe, razorpay: FakeRazorpay
) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        stripe_api_base=stripe.url,
        razorpay_api_base=razorpay.url,
    )


@pytest.fixture(scope="module")
def sql(database_url: str) -> Iterator[Sql]:
    """Rows read straight from the module's database (as its owner)."""
    with sql_runner(database_url) as run:
        yield run


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


@pytest.fixture
def configured(client: TestClient, admin: dict[str, str]) -> Callable[..., None]:
    """Give an environment its key (and, by default, the tests' webhook signing secret)."""

    def configure(environment: str = "test", webhook_secret: str | None = WEBHOOK_SECRET) -> None:
        body: dict[str, Any] = {"secretKey": TEST_KEY if environment == "test" else LIVE_KEY}
        if webhook_secret is not None:
            body["webhookSecret"] = webhook_secret
        answer = client.put(f"/api/payments/stripe/{environment}/config", headers=admin, json=body)
        assert answer.status_code == 200, answer.text

    return configure


@pytest.fixture
def unconfigured(client: TestClient, admin: dict[str, str]) -> Callable[[str], None]:
    def remove(environment: str) -> None:
        answer = client.delete(f"/api/payments/stripe/{environment}/config", headers=admin)
        assert answer.status_code in (200, 404), answer.text

    return remove


@pytest.fixture
def user(client: TestClient) -> tuple[str, dict[str, str]]:
    """A signed-in user of its own: (id, headers)."""
    user_id = str(uuid.uuid4())
    return user_id, user_headers(client, user_id, f"{user_id[:8]}@example.com")
