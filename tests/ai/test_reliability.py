"""Retries (backoff, Retry-After, only before the first byte), fallback models, the circuit breaker, the
stale model catalog, and the cache (on by policy, a ledger flag, free but rate limited)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest

from kilnbase.config import Settings
from tests.ai.conftest import AppServer, gateway_settings, wait_for
from tests.support.fake_openrouter import Fail, FakeOpenRouter, MidStreamError, Reply

SQL = Callable[..., list[dict[str, Any]]]
MODEL = "openai/gpt-4o-mini"
HAIKU = "anthropic/claude-3.5-haiku"
LLAMA = "meta-llama/llama-3.3-8b-instruct:free"


@pytest.fixture(scope="module")
def ai_settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenRouter
) -> Settings:
    return gateway_settings(
        database_url,
        tmp_path_factory.mktemp("ai-reliability"),
        fake,
        ai_retry_max_delay=1.0,
        ai_breaker_threshold=3,
        ai_breaker_cooldown=600,
        ai_catalog_ttl=0.0,
        ai_read_timeout=1.0,
        ai_stream_keepalive=0.1,
    )


@pytest.fixture
def client(server: AppServer, api_key: str, fake: FakeOpenRouter) -> Iterator[openai.OpenAI]:
    fake.reset()
    server.app.services.ai.gateway.breaker.reset()
    with openai.OpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0) as sdk:
        yield sdk


def ask(client: openai.OpenAI, model: str = MODEL, **extra: Any) -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], **extra)


def test_retries_honour_retry_after_then_succeed(client: openai.OpenAI, fake: FakeOpenRouter) -> None:
    fake.script(Fail(429, "busy", headers={"retry-after": "0.3"}), Fail(502, "down"))
    started = time.monotonic()
    reply = ask(client)
    assert reply.choices[0].message.content
    assert len(fake.chat_calls()) == 3
    assert time.monotonic() - started >= 0.3
    fake.script(Fail(429, "come back tomorrow", headers={"retry-after": "3600"}))
    with pytest.raises(openai.RateLimitError) as long_wait:
        ask(client)
    assert long_wait.value.response.headers["x-should-retry"] == "false"
    assert len(fake.chat_calls()) == 4  # a Retry-After past the cap is not waited for
    fake.script(Fail(400, "bad parameter"))
    with pytest.raises(openai.BadRequestError):
        ask(client)
    assert len(fake.chat_calls()) == 5  # a client error is never retried


def test_no_retry_after_the_first_byte(client: openai.OpenAI, fake: FakeOpenRouter) -> None:
    fake.script(MidStreamError(after_chunks=1))
    with pytest.raises(openai.APIError):
        list(ask(client, stream=True))
    assert len(fake.chat_calls()) == 1


def test_fallback_models_from_the_request_and_from_a_configuration(
    client: openai.OpenAI, fake: FakeOpenRouter, server: AppServer, api_key: str, sql: SQL
) -> None:
    fake.rule(MODEL, Fail(502, "model down"))
    reply = ask(client, extra_body={"models": [HAIKU]})
    assert reply.model == HAIKU
    assert "models" not in fake.chat_calls()[-1]["body"]
    stream = list(ask(client, stream=True, extra_body={"models": [HAIKU]}))
    assert stream[0].model == HAIKU
    fake.rule(HAIKU, Fail(503, "also down"))
    with pytest.raises(openai.APIStatusError) as every:
        ask(client, extra_body={"models": [HAIKU]})
    assert every.value.status_code == 503
    assert every.value.code == "all_fallbacks_failed"
    fake.reset()
    server.app.services.ai.gateway.breaker.reset()  # the first half left openai/gpt-4o-mini's circuit open
    fake.rule(LLAMA, Fail(502, "down"))
    headers = {"authorization": f"Bearer {api_key}"}
    created = httpx2.post(
        server.url + "/api/ai/configurations",
        headers=headers,
        json={"modelId": LLAMA, "fallbackModels": [MODEL]},
    )
    assert created.status_code == 201
    assert ask(client, model=LLAMA).model == MODEL
    rows = wait_for(
        lambda: sql("select model, requested_model from ai.usage where requested_model = %s", LLAMA)
    )
    assert rows[-1]["model"] == MODEL


def test_circuit_breaker_opens_after_repeated_failures(
    client: openai.OpenAI, fake: FakeOpenRouter, server: AppServer
) -> None:
    fake.rule(MODEL, Fail(502, "down"))
    with pytest.raises(openai.InternalServerError):
        ask(client)
    assert len(fake.chat_calls()) == 3
    with pytest.raises(openai.APIStatusError) as open_circuit:
        ask(client)
    assert open_circuit.value.status_code == 503
    assert open_circuit.value.code == "provider_unavailable"
    assert len(fake.chat_calls()) == 3  # the open circuit spares the provider
    assert ask(client, model=HAIKU).model == HAIKU  # other models of the provider still work


def test_catalog_is_served_stale_when_the_provider_is_down(
    client: openai.OpenAI, fake: FakeOpenRouter
) -> None:
    assert MODEL in [m.id for m in client.models.list()]
    fake.models_down = True
    assert MODEL in [m.id for m in client.models.list()]
    assert ask(client).choices[0].message.content


def test_cache_hits_are_marked_free_and_still_rate_limited(
    client: openai.OpenAI, fake: FakeOpenRouter, server: AppServer, api_key: str, sql: SQL
) -> None:
    headers = {"authorization": f"Bearer {api_key}"}
    assert httpx2.put(server.url + "/api/ai/policy", json={"cacheEnabled": True}, headers=headers).is_success
    body = {"model": MODEL, "messages": [{"role": "user", "content": "cache me"}]}
    try:
        first = httpx2.post(server.url + "/v1/chat/completions", json=body, headers=headers)
        assert first.headers["x-kilnbase-cache"] == "miss"
        second = httpx2.post(server.url + "/v1/chat/completions", json=body, headers=headers)
        assert second.status_code == 200
        assert second.headers["x-kilnbase-cache"] == "hit"
        assert second.json()["choices"] == first.json()["choices"]
        assert len(fake.chat_calls()) == 1
        httpx2.put(server.url + "/api/ai/limits/project/*", json={"rpm": 0}, headers=headers)
        limited = httpx2.post(server.url + "/v1/chat/completions", json=body, headers=headers)
        assert limited.status_code == 429  # a hit is a request like any other for the rate limits
        httpx2.delete(server.url + "/api/ai/limits/project/*", headers=headers)
        hit = wait_for(lambda: sql("select * from ai.usage where cache_hit"))
        assert hit[0]["cost_usd"] == 0
        embed = {"model": "openai/text-embedding-3-small", "input": "same", "encoding_format": "float"}
        embedded = httpx2.post(server.url + "/v1/embeddings", json=embed, headers=headers)
        assert embedded.headers["x-kilnbase-cache"] == "miss"
        again = httpx2.post(server.url + "/v1/embeddings", json=embed, headers=headers)
        assert again.headers["x-kilnbase-cache"] == "hit"
        no_cache = httpx2.post(
            server.url + "/v1/chat/completions", json=body, headers={**headers, "x-kilnbase-cache": "off"}
        )
        assert "x-kilnbase-cache" not in no_cache.headers
    finally:
        httpx2.delete(server.url + "/api/ai/limits/project/*", headers=headers)
        httpx2.put(server.url + "/api/ai/policy", json={}, headers=headers)


def test_a_provider_that_does_not_answer_in_time_is_a_502(
    client: openai.OpenAI, fake: FakeOpenRouter
) -> None:
    fake.rule(HAIKU, Reply(chunk_delay=0.5))  # answers after 2 s; the gateway waits 1 s per attempt
    with pytest.raises(openai.InternalServerError) as slow:
        ask(client, model=HAIKU)
    assert "did not answer in time" in slow.value.message
    assert len(fake.chat_calls()) == 3


def test_a_silent_stream_gets_keepalive_comments(
    client: openai.OpenAI, server: AppServer, api_key: str, fake: FakeOpenRouter
) -> None:  # `client`: a fresh script and closed circuits, whatever ran before
    fake.script(Reply(content="slow thinker", chunk_delay=0.4, keepalives=0))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "think"}], "stream": True}
    response = httpx2.post(
        server.url + "/v1/chat/completions",
        json=body,
        timeout=20,
        headers={"authorization": f"Bearer {api_key}"},
    )
    lines = response.text.split("\n\n")
    assert lines.count(": keepalive") >= 3  # the fake itself sends one comment; the rest are the gateway's
    assert "data: [DONE]" in lines
