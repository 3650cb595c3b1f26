"""Issue 10, item 13: the anon key reaches no model unless the policy admits anon callers, and then has limits
of its own, counted per client address, on top of the project's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2

from tests.ai.conftest import AppServer, a_fresh_minute, wait_for
from tests.support.fake_openrouter import FakeOpenRouter

SQL = Callable[..., list[dict[str, Any]]]
MODEL = "openai/gpt-4o-mini"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


def call_as(
    server: AppServer, key: str, address: str = "127.0.0.1", path: str = "/v1/chat/completions"
) -> Any:
    """A call with `key` from a loopback `address` (the client address the anon limits count by)."""
    transport = httpx2.HTTPTransport(local_address=address)
    with httpx2.Client(transport=transport, timeout=30) as client:
        return client.post(server.url + path, json=BODY, headers={"authorization": f"Bearer {key}"})


def test_the_anon_key_calls_no_model_unless_the_policy_admits_it(
    admin: httpx2.Client, server: AppServer, anon_key: str, fake: FakeOpenRouter
) -> None:
    refused = call_as(server, anon_key)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "anon_not_allowed"
    assert "anonAccess" in refused.json()["error"]["message"]
    insforge = call_as(server, anon_key, path="/api/ai/chat/completion")
    assert (insforge.status_code, insforge.json()["error"]) == (403, "FORBIDDEN")
    assert fake.chat_calls() == []  # nothing was spent
    listing = httpx2.get(server.url + "/v1/models", headers={"authorization": f"Bearer {anon_key}"})
    assert (listing.status_code, listing.json()["error"]["code"]) == (403, "anon_not_allowed")
    one = httpx2.get(server.url + f"/v1/models/{MODEL}", headers={"authorization": f"Bearer {anon_key}"})
    assert one.status_code == 403
    assert admin.put("/api/ai/policy", json={"anonAccess": True}).json()["anonAccess"] is True
    assert call_as(server, anon_key).status_code == 200
    listed = httpx2.get(server.url + "/v1/models", headers={"authorization": f"Bearer {anon_key}"})
    assert listed.status_code == 200
    assert MODEL in [model["id"] for model in listed.json()["data"]]
    assert len(fake.chat_calls()) == 1


def test_anon_callers_have_limits_per_client_address_and_the_project_limits(
    admin: httpx2.Client, server: AppServer, anon_key: str, api_key: str, sql: SQL
) -> None:
    admin.put("/api/ai/policy", json={"anonAccess": True})
    a_fresh_minute(20)
    assert admin.put("/api/ai/limits/anon/*", json={"rpm": 1}).status_code == 200
    assert call_as(server, anon_key, "127.0.0.1").status_code == 200
    second = call_as(server, anon_key, "127.0.0.1")
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "rate_limit_exceeded"
    assert call_as(server, anon_key, "127.0.0.2").status_code == 200  # another address, its own counter
    assert call_as(server, api_key).status_code == 200  # the anon limits are not the admin's
    counted = sql("select subject, requests from ai.counters where scope = 'anon' order by subject")
    assert [(r["subject"], r["requests"]) for r in counted] == [("127.0.0.1", 1), ("127.0.0.2", 1)]
    # One address can be given its own limits; and the project's limits hold for anon callers too.
    assert admin.put("/api/ai/limits/anon/127.0.0.3", json={"rpm": 2}).status_code == 200
    assert [call_as(server, anon_key, "127.0.0.3").status_code for _ in range(3)] == [200, 200, 429]
    assert admin.put("/api/ai/limits/project/*", json={"rpm": 0}).status_code == 200
    assert call_as(server, anon_key, "127.0.0.4").status_code == 429
    rows = wait_for(lambda: sql("select principal from ai.usage where principal = 'anon'"))
    assert rows
    assert admin.put("/api/ai/limits/nobody/*", json={}).status_code == 400
