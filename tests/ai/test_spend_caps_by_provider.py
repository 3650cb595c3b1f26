"""Issue 10, item 15: a USD cap holds for every kind of provider. Fifty concurrent calls against a cap worth
ten of them end within one call of the cap, whether the key is the environment's, BYOK or managed (catalog
prices) or the model is a registered provider's (a price the admin set); a registered model with no price is
refused under a USD cap; one priced by what the ledger learned is held to the cap as well."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx2
import pytest

from kilnbase.config import Settings
from tests.ai.conftest import KEY_SOURCES, AppServer, gateway_settings, use_provider_kind, wait_for
from tests.support.fake_openrouter import FakeOpenRouter, Reply

SQL = Callable[..., list[dict[str, Any]]]
HAIKU = "anthropic/claude-3.5-haiku"  # catalog: $0.0000008 a prompt token, $0.000004 a completion token
PER_REQUEST = Decimal("0.0004")
CAP = 10 * PER_REQUEST
KINDS = ("env", "byok", "managed", "registered")


@pytest.fixture(scope="module")
def ai_settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenRouter
) -> Settings:
    return gateway_settings(
        database_url,
        tmp_path_factory.mktemp("ai-spend"),
        fake,
        ai_managed_key_url=fake.url.removesuffix("/api/v1") + "/managed/key",
        ai_managed_key_token=fake.managed_token,
        ai_managed_key_ttl=0.0,
    )


@pytest.fixture
def managed_key(fake: FakeOpenRouter) -> Iterator[None]:
    yield
    fake.managed_key = None


async def burst(server: AppServer, api_key: str, model: str, calls: int = 50) -> list[httpx2.Response]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}
    async with httpx2.AsyncClient(
        base_url=server.url, timeout=60, headers={"authorization": f"Bearer {api_key}"}
    ) as client:
        return await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(calls)))


def spent(sql: SQL, model: str, rows: int) -> Decimal:
    """The ledger's total for `model`, once its `rows` rows are written."""

    def total() -> Decimal | None:
        found = sql(
            "select count(*) as n, coalesce(sum(cost_usd), 0) as s from ai.usage where requested_model = %s",
            model,
        )
        return Decimal(found[0]["s"]) if found[0]["n"] >= rows else None

    value = wait_for(total)
    assert value is not None, "the ledger rows were not written"
    return value


@pytest.mark.parametrize("kind", KINDS)
def test_fifty_concurrent_calls_end_within_one_call_of_the_cap(
    kind: str,
    admin: httpx2.Client,
    server: AppServer,
    api_key: str,
    fake: FakeOpenRouter,
    sql: SQL,
    managed_key: None,
) -> None:
    model = use_provider_kind(kind, admin, fake, HAIKU)
    if kind == "managed":
        assert admin.get("/api/ai/gateway/config").json()["source"] == "managed"
    fake.rule(HAIKU, Reply(content="ok", prompt_tokens=10, completion_tokens=100, cost=float(PER_REQUEST)))
    sql("delete from ai.usage where requested_model = %s", model)
    assert admin.put("/api/ai/limits/project/*", json={"usdPerDay": float(CAP)}).status_code == 200
    if kind == "registered":
        unpriced = asyncio.run(burst(server, api_key, model, calls=1))[0]
        assert unpriced.status_code == 402
        assert unpriced.json()["error"]["code"] == "model_price_unknown"
        assert f"PUT /api/ai/prices/{model}" in unpriced.json()["error"]["message"]
        price = admin.put(f"/api/ai/prices/{model}", json={"outputPrice": float(PER_REQUEST / 100 * 10**6)})
        assert price.json()["outputPrice"] == pytest.approx(4.0)
    responses = asyncio.run(burst(server, api_key, model))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 402}
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 402} == {"spend_limit_exceeded"}
    total = spent(sql, model, 50)
    assert total == PER_REQUEST * statuses.count(200)
    assert CAP - PER_REQUEST <= total <= CAP
    served_by = sql(
        "select distinct key_source from ai.usage where requested_model = %s and status = 'ok'", model
    )
    assert [r["key_source"] for r in served_by] == [KEY_SOURCES[kind]]


def test_a_registered_model_priced_by_the_ledger_is_held_to_the_cap(
    admin: httpx2.Client, server: AppServer, api_key: str, fake: FakeOpenRouter, sql: SQL
) -> None:
    model = use_provider_kind("registered", admin, fake, HAIKU, provider="learner")
    fake.rule(HAIKU, Reply(content="ok", prompt_tokens=10, completion_tokens=100, cost=float(PER_REQUEST)))
    assert all(r.status_code == 200 for r in asyncio.run(burst(server, api_key, model, calls=3)))
    spent(sql, model, 3)  # the provider reported its cost: the ledger knows what a call of this model costs
    assert admin.put("/api/ai/limits/project/*", json={"usdPerDay": float(CAP)}).status_code == 200
    responses = asyncio.run(burst(server, api_key, model))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 402}
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 402} == {"spend_limit_exceeded"}
    assert spent(sql, model, 53) - 3 * PER_REQUEST <= CAP
