"""With Redis configured, quota counters live there (a real redis-server on loopback): the same race holds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx2
import pytest
import redis

from kilnbase.config import Settings
from tests.ai.conftest import AppServer, wait_for
from tests.support.fake_openrouter import FakeOpenRouter, Reply
from tests.support.redis_server import RedisServer

SQL = Callable[..., list[dict[str, Any]]]
HAIKU = "anthropic/claude-3.5-haiku"


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = RedisServer().start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def ai_settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenRouter, redis_url: str
) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("ai-redis"),
        openrouter_base_url=fake.url,
        openrouter_api_key="sk-or-v1-fake",
        ai_policy_ttl=0.0,
        ai_redis_url=redis_url,
    )


def test_spend_cap_race_with_counters_in_redis(
    server: AppServer, api_key: str, fake: FakeOpenRouter, sql: SQL, redis_url: str
) -> None:
    per_request, cap = Decimal("0.0004"), Decimal("0.01")
    fake.rule(HAIKU, Reply(content="ok", prompt_tokens=10, completion_tokens=100, cost=float(per_request)))
    headers = {"authorization": f"Bearer {api_key}"}
    assert (
        httpx2.put(
            server.url + "/api/ai/limits/project/*",
            json={"usdPerDay": float(cap), "rpm": 1000},
            headers=headers,
        ).status_code
        == 200
    )
    body = {"model": HAIKU, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}

    async def burst() -> list[int]:
        async with httpx2.AsyncClient(base_url=server.url, timeout=60, headers=headers) as client:
            responses = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=body) for _ in range(50))
            )
        return [r.status_code for r in responses]

    statuses = asyncio.run(burst())
    assert set(statuses) == {200, 402}
    served = statuses.count(200)
    total = wait_for(
        lambda: (
            len(sql("select 1 from ai.usage")) >= 50
            and Decimal(sql("select sum(cost_usd) as s from ai.usage")[0]["s"])
        )
    )
    assert total == per_request * served
    assert cap - 2 * per_request <= total <= cap
    client = redis.Redis.from_url(redis_url)
    day_keys = [k for k in client.keys("kilnbase:ai:counter:project:*:day:*")]
    assert len(day_keys) == 1
    settled = wait_for(lambda: Decimal(int(client.hget(day_keys[0], "usd") or 0)) / 10**9 == total)
    assert settled
    minute = client.keys("kilnbase:ai:counter:project:*:minute:*")
    assert int(client.hget(minute[0], "requests") or 0) == served
    assert 0 < client.ttl(minute[0]) <= 120
    assert sql("select count(*) as n from ai.counters")[0]["n"] == 0
    httpx2.put(server.url + "/api/ai/limits/project/*", json={"rpm": served}, headers=headers)
    limited = httpx2.post(server.url + "/v1/chat/completions", json=body, headers=headers)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
