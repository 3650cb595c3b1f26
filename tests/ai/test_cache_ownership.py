"""Issue 10, item 16: the response cache. Only the policy turns it on (a request's header may only turn it
off), an entry is replayed only to the caller it was made for, and a hit counts against the rate limits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.ai.conftest import AppServer, a_fresh_minute
from tests.support.fake_openrouter import FakeOpenRouter

BODY = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "the same question"}]}


@pytest.fixture
def keys(admin: httpx2.Client, server: AppServer) -> Iterator[tuple[httpx2.Client, httpx2.Client]]:
    """Two gateway keys (two callers); the first limited to three requests a minute."""
    first = admin.post("/api/ai/gateway/keys", json={"name": "one", "limits": {"rpm": 3}}).json()["key"]
    second = admin.post("/api/ai/gateway/keys", json={"name": "two"}).json()["key"]
    with (
        httpx2.Client(base_url=server.url, headers={"authorization": f"Bearer {first}"}, timeout=30) as one,
        httpx2.Client(base_url=server.url, headers={"authorization": f"Bearer {second}"}, timeout=30) as two,
    ):
        yield one, two


def ask(client: httpx2.Client, **headers: str) -> Any:
    return client.post("/v1/chat/completions", json=BODY, headers=headers)


def test_a_request_cannot_turn_the_cache_on(admin: httpx2.Client, fake: FakeOpenRouter) -> None:
    first, second = ask(admin, **{"x-kilnbase-cache": "on"}), ask(admin, **{"x-kilnbase-cache": "on"})
    assert "x-kilnbase-cache" not in first.headers
    assert "x-kilnbase-cache" not in second.headers
    assert len(fake.chat_calls()) == 2


def test_entries_belong_to_their_caller_and_hits_are_rate_limited(
    admin: httpx2.Client, keys: tuple[httpx2.Client, httpx2.Client], fake: FakeOpenRouter
) -> None:
    one, two = keys
    a_fresh_minute()
    assert admin.put("/api/ai/policy", json={"cacheEnabled": True}).json()["cacheEnabled"] is True
    assert [ask(one).headers["x-kilnbase-cache"] for _ in range(3)] == ["miss", "hit", "hit"]
    assert ask(two).headers["x-kilnbase-cache"] == "miss"  # another caller's entry is not replayed
    assert ask(admin).headers["x-kilnbase-cache"] == "miss"
    assert len(fake.chat_calls()) == 3
    limited = ask(one)  # its fourth request this minute, though the answer is cached
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert "x-kilnbase-cache" not in ask(two, **{"x-kilnbase-cache": "off"}).headers
    assert len(fake.chat_calls()) == 4
