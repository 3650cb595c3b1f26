"""Which key calls OpenRouter: BYOK first, then the managed source, then the environment; usage is recorded
under whichever was used, and no key is ever shown unmasked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from kilnbase.config import Settings
from tests.ai.conftest import AppServer, wait_for
from tests.support.fake_openrouter import FakeOpenRouter

SQL = Callable[..., list[dict[str, Any]]]
BODY = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "which key?"}]}


@pytest.fixture(scope="module")
def ai_settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenRouter
) -> Settings:
    managed_url = fake.url.replace("/api/v1", "/managed/key")
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("ai-credentials"),
        openrouter_base_url=fake.url,
        openrouter_api_key="sk-or-v1-fake",
        ai_policy_ttl=0.0,
        ai_managed_key_url=managed_url,
        ai_managed_key_token="cloud-token",
        ai_managed_key_ttl=0.0,
    )


def test_byok_then_managed_then_environment(
    server: AppServer, api_key: str, fake: FakeOpenRouter, sql: SQL
) -> None:
    headers = {"authorization": f"Bearer {api_key}"}

    def call_and_source() -> tuple[str, str]:
        assert httpx2.post(server.url + "/v1/chat/completions", json=BODY, headers=headers).status_code == 200
        status = httpx2.get(server.url + "/api/ai/gateway/config", headers=headers).json()
        return fake.chat_calls()[-1]["authorization"], status["source"]

    assert call_and_source() == ("Bearer sk-or-v1-fake", "env")
    fake.managed_key = "sk-or-v1-managed-5678"
    fake.valid_keys.add("sk-or-v1-managed-5678")
    assert call_and_source() == ("Bearer sk-or-v1-managed-5678", "managed")
    fake.valid_keys.add("sk-or-v1-byok-9999")
    saved = httpx2.post(
        server.url + "/api/ai/gateway/config", json={"apiKey": "sk-or-v1-byok-9999"}, headers=headers
    )
    assert saved.status_code == 200
    assert call_and_source() == ("Bearer sk-or-v1-byok-9999", "byok")
    httpx2.delete(server.url + "/api/ai/gateway/config", headers=headers)
    assert call_and_source() == ("Bearer sk-or-v1-managed-5678", "managed")
    fake.managed_key = None
    assert call_and_source() == ("Bearer sk-or-v1-fake", "env")
    sources = wait_for(
        lambda: (
            {r["key_source"] for r in sql("select key_source from ai.usage")} >= {"env", "managed", "byok"}
            and {r["key_source"] for r in sql("select key_source from ai.usage")}
        )
    )
    assert sources == {"env", "managed", "byok"}
    audit = sql("select details::text as d from system.audit_logs where module = 'AI'")
    assert audit
    assert all("sk-or-v1" not in r["d"] for r in audit)
