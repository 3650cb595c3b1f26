"""Quotas, rate limits and spend caps (reserved before, settled after, atomically), gateway keys scoped to
models and limits, the allow-list and the max_tokens cap, and the audit trail of every change."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx2
import openai
import pytest
from psycopg_pool import AsyncConnectionPool

from kilnbase.ai.limits import PostgresCounters
from kilnbase.db.session import Database
from tests.ai.conftest import AppServer, a_fresh_minute, wait_for
from tests.support.fake_openrouter import FakeOpenRouter, Reply
from tests.support.oidc_provider import OidcProvider

SQL = Callable[..., list[dict[str, Any]]]
MODEL = "openai/gpt-4o-mini"
HAIKU = "anthropic/claude-3.5-haiku"


@pytest.fixture
def admin(server: AppServer, api_key: str, fake: FakeOpenRouter, sql: SQL) -> Iterator[httpx2.Client]:
    fake.reset()
    sql("delete from ai.limits")
    sql("delete from ai.counters")
    sql("update ai.policy set allowed_models = null, max_tokens_cap = null, cache_enabled = false")
    with httpx2.Client(base_url=server.url, headers={"authorization": f"Bearer {api_key}"}, timeout=30) as c:
        yield c


def sdk(server: AppServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def ask(client: openai.OpenAI, model: str = MODEL, **extra: Any) -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], **extra)


def test_fifty_concurrent_requests_never_spend_past_the_cap(
    admin: httpx2.Client, server: AppServer, api_key: str, fake: FakeOpenRouter, sql: SQL
) -> None:
    cap = Decimal("0.01")
    per_request = Decimal("0.0004")
    fake.rule(HAIKU, Reply(content="ok", prompt_tokens=10, completion_tokens=100, cost=float(per_request)))
    assert admin.put("/api/ai/limits/project/*", json={"usdPerDay": float(cap)}).status_code == 200
    before = Decimal(sql("select coalesce(sum(cost_usd), 0) as s from ai.usage")[0]["s"])
    body = {"model": HAIKU, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}

    async def burst() -> list[httpx2.Response]:
        async with httpx2.AsyncClient(
            base_url=server.url, timeout=60, headers={"authorization": f"Bearer {api_key}"}
        ) as client:
            return await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(50)))

    responses = asyncio.run(burst())
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 402}
    refused = next(r for r in responses if r.status_code == 402).json()["error"]
    assert (refused["type"], refused["code"]) == ("insufficient_quota", "spend_limit_exceeded")
    served = statuses.count(200)
    rows = wait_for(
        lambda: (
            len(sql("select 1 from ai.usage where requested_model = %s", HAIKU)) >= 50
            and sql("select coalesce(sum(cost_usd), 0) as s from ai.usage")[0]["s"]
        )
    )
    spent = Decimal(rows) - before
    assert spent == per_request * served
    assert cap - 2 * per_request <= spent <= cap
    counter = wait_for(
        lambda: (
            (r := sql("select usd from ai.counters where window_kind = 'day'"))
            and Decimal(r[0]["usd"]) == spent
            and r
        )
    )
    assert counter, "the settled counter equals the ledger's total"


def test_rate_limit_is_429_with_retry_after_and_token_quota_is_402(
    admin: httpx2.Client, server: AppServer, api_key: str
) -> None:
    a_fresh_minute()
    admin.put("/api/ai/limits/project/*", json={"rpm": 2})
    client = sdk(server, api_key)
    ask(client)
    ask(client)
    with pytest.raises(openai.RateLimitError) as limited:
        ask(client)
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60
    assert limited.value.code == "rate_limit_exceeded"
    admin.put("/api/ai/limits/project/*", json={"tokensPerDay": 100})
    with pytest.raises(openai.APIStatusError) as quota:
        ask(client, max_tokens=200)
    assert quota.value.status_code == 402
    assert quota.value.code == "quota_exceeded"
    assert admin.delete("/api/ai/limits/project/*").status_code == 200
    assert admin.delete("/api/ai/limits/project/*").status_code == 404
    ask(client)


def test_gateway_keys_are_scoped_to_models_max_tokens_and_their_own_limits(
    admin: httpx2.Client, server: AppServer, sql: SQL
) -> None:
    created = admin.post(
        "/api/ai/gateway/keys",
        json={"name": "agent-7", "models": ["openai/*"], "maxTokens": 50, "limits": {"rpm": 2}},
    )
    assert created.status_code == 201
    a_fresh_minute()
    key = created.json()["key"]
    assert key.startswith("kbk_")
    listed = admin.get("/api/ai/gateway/keys").json()
    assert key not in str(listed)
    assert next(k for k in listed if k["id"] == created.json()["id"])["limits"]["rpm"] == 2
    agent = sdk(server, key)
    assert ask(agent).choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as other_model:
        ask(agent, model=HAIKU)
    assert other_model.value.code == "model_not_allowed"
    with pytest.raises(openai.BadRequestError) as too_long:
        ask(agent, max_tokens=100)
    assert too_long.value.code == "max_tokens_exceeded"
    ask(agent)
    with pytest.raises(openai.RateLimitError):
        ask(agent)
    rows = wait_for(lambda: sql("select * from ai.usage where key_id = %s", created.json()["id"]))
    assert rows[0]["principal"] == "gateway-key:agent-7"
    assert admin.delete(f"/api/ai/gateway/keys/{created.json()['id']}").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        ask(agent)
    assert admin.post("/api/ai/gateway/keys", json={"name": ""}).status_code == 400
    assert admin.post("/api/ai/gateway/keys", json={"name": "x", "limits": {"rpm": -1}}).status_code == 400


@pytest.mark.parametrize(
    ("path", "method", "body", "named"),
    [
        ("/api/ai/gateway/keys", "POST", {"name": "past-int", "maxTokens": 2**31}, "maxTokens"),
        ("/api/ai/gateway/keys", "POST", {"name": "past-int", "limits": {"rpm": 2**31}}, "rpm"),
        ("/api/ai/limits/project/*", "PUT", {"rpm": 2**31}, "rpm"),
        ("/api/ai/limits/project/*", "PUT", {"tokensPerDay": 2**63}, "tokensPerDay"),
    ],
)
def test_a_limit_past_what_its_column_holds_is_a_400_not_a_500(
    admin: httpx2.Client, path: str, method: str, body: dict[str, Any], named: str
) -> None:
    """`rpm` and `maxTokens` are `integer` columns, the token limits `bigint`: a larger number is the
    client's mistake, named in the refusal, and nothing is stored."""
    refused = admin.request(method, path, json=body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "INVALID_INPUT" and named in refused.json()["message"]
    assert admin.get("/api/ai/limits").json() == []
    assert not [key for key in admin.get("/api/ai/gateway/keys").json() if key["name"] == "past-int"]


def test_per_user_limits_count_each_user_separately(admin: httpx2.Client, server: AppServer) -> None:
    a_fresh_minute()
    admin.put("/api/ai/limits/user/*", json={"rpm": 1})
    tokens = server.app.services.core.tokens
    first, second = (
        tokens.sign({"sub": str(uuid.uuid4()), "role": "authenticated", "email": f"{n}@x.dev"})
        for n in ("a", "b")
    )
    ask(sdk(server, first))
    with pytest.raises(openai.RateLimitError):
        ask(sdk(server, first))
    ask(sdk(server, second))


def test_per_user_limits_hold_external_providers_users(admin: httpx2.Client, server: AppServer) -> None:
    """A user of an external JWT provider (`/api/auth/jwt-providers`) is an end user like a Kilnbase one:
    `user/*` caps each of them, counted by provider and subject, and the ledger names them so."""
    a_fresh_minute()
    idp = OidcProvider()
    idp.start()
    try:
        tag = uuid.uuid4().hex[:8]
        provider = idp.provider_body(tag)
        assert admin.post("/api/auth/jwt-providers", json=provider).status_code == 201
        admin.put("/api/ai/limits/user/*", json={"rpm": 1})
        first, second = (
            idp.sign(idp.claims(f"user_{tag}_{n}", "same@example.com", iss=provider["issuer"])) for n in "ab"
        )
        ask(sdk(server, first))
        with pytest.raises(openai.RateLimitError):
            ask(sdk(server, first))
        ask(sdk(server, second))
    finally:
        idp.stop()
        admin.delete(f"/api/auth/jwt-providers/idp-{tag}")
    usage = admin.get("/api/ai/usage", params={"limit": 10}).json()
    rows = usage if isinstance(usage, list) else usage.get("data", usage.get("records", []))
    assert f"jwt:idp-{tag}:user_{tag}_a" in {row.get("userId") for row in rows}


def test_allow_list_and_max_tokens_cap(
    admin: httpx2.Client, server: AppServer, api_key: str, fake: FakeOpenRouter
) -> None:
    put = admin.put("/api/ai/policy", json={"allowedModels": [MODEL], "maxTokensCap": 64})
    assert put.json() == {
        "allowedModels": [MODEL],
        "maxTokensCap": 64,
        "cacheEnabled": False,
        "anonAccess": False,
        "allowedRequestFields": [],
    }
    client = sdk(server, api_key)
    ask(client)
    assert fake.chat_calls()[-1]["body"]["max_tokens"] == 64
    with pytest.raises(openai.PermissionDeniedError):
        ask(client, model=HAIKU)
    with pytest.raises(openai.BadRequestError):
        ask(client, max_tokens=65)
    assert [m.id for m in client.models.list()] == [MODEL]
    assert admin.put("/api/ai/policy", json={"maxTokensCap": 0}).status_code == 400
    # Past what its `integer` column holds: refused by name, before anything is written.
    big = admin.put("/api/ai/policy", json={"maxTokensCap": 2**31})
    assert big.status_code == 400 and "maxTokensCap" in big.json()["message"], big.text
    assert admin.get("/api/ai/policy").json()["maxTokensCap"] == 64
    assert admin.put("/api/ai/policy", json={"allowedModels": "all"}).status_code == 400


def test_admin_routes_need_admin_and_every_change_is_audited(
    admin: httpx2.Client, server: AppServer, sql: SQL
) -> None:
    anon_key = server.app.services.core.keys.anon_key
    for method, path in (
        ("GET", "/api/ai/limits"),
        ("PUT", "/api/ai/policy"),
        ("GET", "/api/ai/gateway/keys"),
    ):
        response = httpx2.request(
            method, server.url + path, json={}, headers={"authorization": f"Bearer {anon_key}"}
        )
        assert response.status_code == 401
    assert admin.put("/api/ai/limits/galaxy/*", json={}).status_code == 400
    assert admin.put("/api/ai/limits/project/someone", json={}).status_code == 400
    sql("delete from system.audit_logs where module = 'AI'")  # only this test's own changes count below
    assert admin.put("/api/ai/limits/project/*", json={"rpm": 5}).status_code == 200
    assert admin.delete("/api/ai/limits/project/*").status_code == 200
    key_id = admin.post("/api/ai/gateway/keys", json={"name": "audited"}).json()["id"]
    assert admin.delete(f"/api/ai/gateway/keys/{key_id}").status_code == 200
    assert admin.put("/api/ai/policy", json={}).status_code == 200
    actions = {r["action"] for r in sql("select action from system.audit_logs where module = 'AI'")}
    assert {
        "SET_AI_LIMITS",
        "DELETE_AI_LIMITS",
        "CREATE_GATEWAY_KEY",
        "REVOKE_GATEWAY_KEY",
        "UPDATE_AI_POLICY",
    } <= actions


def test_expired_counters_are_pruned_and_live_ones_kept(
    admin: httpx2.Client, sql: SQL, database_url: str
) -> None:
    sql(
        "insert into ai.counters (scope, subject, window_kind, window_start, requests) values "
        "('project', '*', 'minute', now() - interval '1 hour', 1), ('project', '*', 'day', now(), 1)"
    )

    async def prune() -> int:
        async with AsyncConnectionPool(database_url, min_size=1, open=False) as pool:
            return await PostgresCounters(lambda: Database(pool, pool)).prune()  # owner work only

    assert asyncio.run(prune()) == 1
    assert [r["window_kind"] for r in sql("select window_kind from ai.counters")] == ["day"]


def test_agent_keys_have_model_budgets_of_their_own(
    admin: httpx2.Client, server: AppServer, sql: SQL
) -> None:
    a_fresh_minute()
    names = [f"coder-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    keys = [
        admin.post("/api/agents/keys", json={"name": name, "scopes": ["ai:write"]}).json() for name in names
    ]
    reader = admin.post("/api/agents/keys", json={"name": "reader", "scopes": ["*:read"]}).json()
    assert admin.put(f"/api/ai/limits/agent/{keys[0]['id']}", json={"rpm": 1}).status_code == 200
    ask(sdk(server, keys[0]["key"]))
    with pytest.raises(openai.RateLimitError):
        ask(sdk(server, keys[0]["key"]))
    ask(sdk(server, keys[1]["key"]))  # no budget of its own yet: not counted with the first's
    assert admin.put("/api/ai/limits/agent/*", json={"rpm": 1}).status_code == 200
    ask(sdk(server, keys[1]["key"]))  # the default for every agent key without a row: one a minute
    with pytest.raises(openai.RateLimitError):
        ask(sdk(server, keys[1]["key"]))
    with pytest.raises(openai.PermissionDeniedError):
        ask(sdk(server, reader["key"]))  # a model call is a write: its scopes do not reach ai:write
    wanted = {f"agent:{name}" for name in names}
    recorded = "select distinct principal from ai.usage where principal = any(%s)"
    assert wait_for(lambda: {row["principal"] for row in sql(recorded, list(wanted))} == wanted)
