"""Issue 10, item 14: a token cap holds whichever token field carries the budget and however many choices are
asked for; `n` is counted in the reservation; only the request fields the policy allows reach a provider."""

from __future__ import annotations

from typing import Any

import httpx2

from tests.ai.conftest import AppServer
from tests.support.fake_openrouter import FakeOpenRouter

MODEL = "openai/gpt-4o-mini"


def chat(client: httpx2.Client, **fields: Any) -> httpx2.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}
    return client.post("/v1/chat/completions", json=body)


def test_every_token_field_and_n_are_held_to_a_keys_cap(
    admin: httpx2.Client, server: AppServer, fake: FakeOpenRouter
) -> None:
    created = admin.post("/api/ai/gateway/keys", json={"name": "capped", "maxTokens": 50}).json()
    with httpx2.Client(
        base_url=server.url, headers={"authorization": f"Bearer {created['key']}"}, timeout=30
    ) as agent:
        escape = chat(agent, max_completion_tokens=10, max_tokens=100_000)
        assert escape.status_code == 400
        assert escape.json()["error"]["param"] == "max_tokens"
        assert escape.json()["error"]["code"] == "max_tokens_exceeded"
        reasoning = chat(agent, max_tokens=10, reasoning={"max_tokens": 4000})
        assert reasoning.status_code == 400
        assert reasoning.json()["error"]["param"] == "reasoning.max_tokens"
        many = chat(agent, n=64)
        assert many.status_code == 400
        assert many.json()["error"]["param"] == "n"
        per_choice = chat(agent, n=2, max_tokens=30)  # 2 x 30 tokens is more than the cap of 50
        assert per_choice.status_code == 400
        assert fake.chat_calls() == []  # none of them reached the provider
        assert chat(agent, n=2).status_code == 200
        sent = fake.chat_calls()[-1]["body"]
        assert (sent["n"], sent["max_tokens"]) == (2, 25)  # the cap, shared among the choices
        assert chat(agent, max_completion_tokens=20).status_code == 200
        assert fake.chat_calls()[-1]["body"]["max_completion_tokens"] == 20
    assert chat(admin, n=129).status_code == 400


def test_n_counts_in_the_reservation(admin: httpx2.Client, fake: FakeOpenRouter) -> None:
    assert admin.put("/api/ai/limits/project/*", json={"tpm": 1000}).status_code == 200
    assert chat(admin, max_tokens=100, n=4).status_code == 200
    refused = chat(admin, max_tokens=100, n=16)  # 1600 completion tokens: more than the minute allows
    assert refused.status_code == 429
    assert "may use" in refused.json()["error"]["message"]
    assert len(fake.chat_calls()) == 1


def test_only_allowed_request_fields_reach_the_provider(admin: httpx2.Client, fake: FakeOpenRouter) -> None:
    for field, value in (
        ("provider", {"order": ["Anthropic"], "allow_fallbacks": False}),
        ("plugins", [{"id": "web"}]),
        ("transforms", ["middle-out"]),
        ("service_tier", "priority"),
        ("modalities", ["image", "text"]),
        ("made_up_field", 1),
    ):
        refused = chat(admin, **{field: value})
        assert refused.status_code == 400, field
        assert refused.json()["error"]["code"] == "parameter_not_allowed"
        assert refused.json()["error"]["param"] == field
    assert fake.chat_calls() == []
    assert chat(admin, top_k=40, seed=7, user="u1", stop=["\n"]).status_code == 200  # standard fields pass
    policy = admin.put("/api/ai/policy", json={"allowedRequestFields": ["provider"]})
    assert policy.json()["allowedRequestFields"] == ["provider"]
    assert chat(admin, provider={"order": ["Anthropic"]}).status_code == 200
    assert fake.chat_calls()[-1]["body"]["provider"] == {"order": ["Anthropic"]}
    assert chat(admin, plugins=[{"id": "web"}]).status_code == 400
    invalid = admin.put("/api/ai/policy", json={"allowedRequestFields": ["Not A Field"]})
    assert invalid.status_code == 400
    assert "allowedRequestFields.0" in invalid.json()["message"]
