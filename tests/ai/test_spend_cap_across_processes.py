"""Two `kilnbase serve` processes sharing one database enforce one spend cap together."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from decimal import Decimal

import httpx2
import psycopg
import pytest

from tests.ai.conftest import wait_for
from tests.support import postgres
from tests.support.fake_openrouter import FakeOpenRouter, Reply
from tests.support.servers import ServerProcess

HAIKU = "anthropic/claude-3.5-haiku"


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
        "KILNBASE_AI_POLICY_TTL": "0",
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


def test_two_processes_share_one_spend_cap(
    pair: tuple[list[ServerProcess], str, str], fake: FakeOpenRouter
) -> None:
    servers, api_key, database = pair
    per_request, cap = Decimal("0.0004"), Decimal("0.01")
    fake.rule(HAIKU, Reply(content="ok", prompt_tokens=10, completion_tokens=100, cost=float(per_request)))
    headers = {"authorization": f"Bearer {api_key}"}
    assert (
        httpx2.put(
            servers[0].url + "/api/ai/limits/project/*", json={"usdPerDay": float(cap)}, headers=headers
        ).status_code
        == 200
    )
    body = {"model": HAIKU, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}

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
    assert rows == 50
    assert total == per_request * statuses.count(200)
    assert cap - 2 * per_request <= total <= cap
