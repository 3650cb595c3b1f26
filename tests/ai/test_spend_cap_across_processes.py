"""Two `kilnbase serve` processes sharing one database enforce one spend cap together, for every kind of
provider: the environment's OpenRouter key, a BYOK key, a managed key (catalog prices), and a registered
provider (a price the admin set)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from decimal import Decimal

import httpx2
import psycopg
import pytest

from tests.ai.conftest import KEY_SOURCES, use_provider_kind, wait_for
from tests.support import postgres
from tests.support.fake_openrouter import FakeOpenRouter, Reply
from tests.support.servers import ServerProcess

HAIKU = "anthropic/claude-3.5-haiku"
PER_REQUEST = Decimal("0.0004")
#: Ten calls' worth: a catalog-priced reservation overestimates a call by 5% (the prompt's generous estimate),
#: so ten calls' reservations fit below the cap's last call.
CAP = 10 * PER_REQUEST


@pytest.fixture(scope="module")
def pair(
    cluster: postgres.TestCluster, fake: FakeOpenRouter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[ServerProcess], str, str]]:
    database = cluster.create_database("ai-pair")
    api_key = "ik_" + secrets.token_hex(32)
    env = {
        "DATABASE_URL": database,
        "OPENROUTER_BASE_URL": fake.url,
        "OPENROUTER_API_KEY": "sk-or-v1-fake",
        "ACCESS_API_KEY": api_key,
        # One encryption key, so that either process reads the BYOK and provider keys the other stored.
        "ENCRYPTION_KEY": secrets.token_hex(32),
        "KILNBASE_AI_POLICY_TTL": "0",
        "KILNBASE_AI_MANAGED_KEY_URL": fake.url.removesuffix("/api/v1") + "/managed/key",
        "KILNBASE_AI_MANAGED_KEY_TOKEN": fake.managed_token,
        "KILNBASE_AI_MANAGED_KEY_TTL": "0",
    }
    servers = []
    try:
        for name in ("one", "two"):
            server = ServerProcess(tmp_path_factory.mktemp(name) / "data", env=env)
            server.start()
            servers.append(server)
        yield servers, api_key, database
    finally:
        for server in servers:
            server.stop()


@pytest.mark.parametrize("kind", ["env", "byok", "managed", "registered"])
def test_two_processes_share_one_spend_cap(
    kind: str, pair: tuple[list[ServerProcess], str, str], fake: FakeOpenRouter
) -> None:
    servers, api_key, database = pair
    headers = {"authorization": f"Bearer {api_key}"}
    with httpx2.Client(base_url=servers[0].url, headers=headers, timeout=30) as admin:
        model = use_provider_kind(kind, admin, fake, HAIKU)
        if kind == "registered":
            per_million = float(PER_REQUEST / 100 * 10**6)  # all of a call's cost is its 100 output tokens
            assert admin.put(f"/api/ai/prices/{model}", json={"outputPrice": per_million}).is_success
    fake.rule(HAIKU, Reply(content="ok", prompt_tokens=10, completion_tokens=100, cost=float(PER_REQUEST)))
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("delete from ai.counters")
        conn.execute("delete from ai.usage")
    limit = httpx2.put(
        servers[0].url + "/api/ai/limits/project/*", json={"usdPerDay": float(CAP)}, headers=headers
    )
    assert limit.status_code == 200
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}

    async def burst() -> list[int]:
        async with httpx2.AsyncClient(timeout=60, headers=headers) as client:
            responses = await asyncio.gather(
                *(client.post(servers[i % 2].url + "/v1/chat/completions", json=body) for i in range(50))
            )
        return [r.status_code for r in responses]

    statuses = asyncio.run(burst())
    assert set(statuses) == {200, 402}
    with psycopg.connect(database, autocommit=True) as conn:

        def spent() -> tuple[int, Decimal]:
            row = conn.execute("select count(*), coalesce(sum(cost_usd), 0) from ai.usage").fetchone()
            assert row is not None
            return int(row[0]), Decimal(row[1])

        rows, total = wait_for(lambda: spent()[0] >= 50 and spent()) or spent()
        sources = {r[0] for r in conn.execute("select distinct key_source from ai.usage where status = 'ok'")}
    assert rows == 50
    assert total == PER_REQUEST * statuses.count(200)
    assert CAP - PER_REQUEST <= total <= CAP  # within one call of the cap
    assert sources == {KEY_SOURCES[kind]}
