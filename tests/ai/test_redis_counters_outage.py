"""Gateway quota counters in a Redis that goes away: calls a limit applies to are refused with a 503 (a spend
cap is never lifted), a call already under way is still recorded in the usage ledger, and health says so."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest

from kilnbase.config import Settings
from tests.ai.conftest import gateway_settings, wait_for
from tests.support.fake_openrouter import FakeOpenRouter, Reply
from tests.support.redis_server import RedisServer

SQL = Callable[..., list[dict[str, Any]]]
HAIKU = "anthropic/claude-3.5-haiku"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ai_settings(
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeOpenRouter,
    redis_server: RedisServer,
) -> Settings:
    return gateway_settings(
        database_url, tmp_path_factory.mktemp("ai-redis-outage"), fake, ai_redis_url=redis_server.url
    )


def test_limits_out_of_reach_refuse_calls_and_keep_the_ledger(
    server: Any, api_key: str, fake: FakeOpenRouter, sql: SQL, redis_server: RedisServer
) -> None:
    headers = {"authorization": f"Bearer {api_key}"}
    limited = httpx2.put(server.url + "/api/ai/limits/project/*", json={"rpm": 1000}, headers=headers)
    assert limited.status_code == 200
    slow = Reply(content="one two three four", prompt_tokens=5, completion_tokens=4, chunk_delay=0.2)
    fake.rule(HAIKU, slow)
    body = {"model": HAIKU, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    started = time.time()
    with httpx2.Client(base_url=server.url, headers=headers, timeout=30) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as stream:
            assert stream.status_code == 200  # reserved in Redis: now Redis goes
            redis_server.stop()
            assert b"[DONE]" in b"".join(stream.iter_bytes())
        calls_before = len(fake.chat_calls())
        refused = client.post("/v1/chat/completions", json={**body, "stream": False})
        health = client.get("/api/health")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "limits_unavailable"
    assert "Redis cannot be reached" in refused.json()["error"]["message"]
    assert len(fake.chat_calls()) == calls_before  # the provider was never asked
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    rows = wait_for(
        lambda: sql(
            "select status, http_status from ai.usage where created_at >= to_timestamp(%s) "
            "order by created_at",
            started,
        )
    )
    assert [(row["status"], row["http_status"]) for row in rows][:1] == [("ok", 200)]
