"""Issue 10, item 17: a provider echoing a key in an error gets it to no caller, no ledger row and no log
line; the keys in use are redacted whatever they look like, not only those shaped like a known prefix."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any

import httpx2
import orjson
import pytest

from kilnbase.ai.catalog import ModelCatalog
from kilnbase.ai.providers import UpstreamError
from kilnbase.ai.redaction import Redactor
from tests.ai.conftest import AppServer, wait_for
from tests.support.fake_openrouter import Fail, FakeOpenRouter, MidStreamError

SQL = Callable[..., list[dict[str, Any]]]
MODEL = "openai/gpt-4o-mini"


def chat(admin: httpx2.Client, model: str, **extra: Any) -> httpx2.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "x"}], **extra}
    return admin.post("/v1/chat/completions", json=body)


def errors_in_ledger(sql: SQL, count: int) -> list[str]:
    rows = wait_for(
        lambda: (r := sql("select error from ai.usage where error is not null")) and len(r) >= count and r
    )
    assert rows, "the ledger rows were not written"
    return [r["error"] for r in rows]


def test_keys_echoed_by_providers_are_redacted_in_answers_and_the_ledger(
    admin: httpx2.Client, server: AppServer, fake: FakeOpenRouter, sql: SQL
) -> None:
    sql("delete from ai.usage")
    groq_key = "gsk_" + secrets.token_hex(20)  # a registered provider's key (Groq's shape)
    byok_key = "kiln-byok-" + secrets.token_hex(12)  # a BYOK key shaped like nothing known
    fake.valid_keys.update({groq_key, byok_key})
    assert admin.put("/api/ai/providers/groq", json={"baseUrl": fake.url, "apiKey": groq_key}).is_success
    assert admin.post("/api/ai/gateway/config", json={"apiKey": byok_key}).json()["source"] == "byok"

    fake.script(Fail(400, f"Invalid API Key: {groq_key}"))
    registered = chat(admin, "groq/llama-3.1-8b")
    fake.script(Fail(403, f"Key {byok_key} may not use this model"))
    byok = chat(admin, MODEL)
    fake.script(MidStreamError(after_chunks=1, message=f"upstream said: bad key {byok_key}"))
    streamed = chat(admin, MODEL, stream=True)
    for response in (registered, byok, streamed):
        assert groq_key not in response.text
        assert byok_key not in response.text
        assert "[redacted]" in response.text
    assert registered.status_code == 400
    assert byok.status_code == 403
    assert orjson.loads(streamed.text.split("data: ")[-2])["error"]["message"].endswith("bad key [redacted]")
    for error in errors_in_ledger(sql, 3):
        assert groq_key not in error
        assert byok_key not in error


def test_the_catalog_logs_a_providers_error_without_its_key(caplog: pytest.LogCaptureFixture) -> None:
    key = "kiln-provider-" + secrets.token_hex(12)

    class Down:
        name = "local"

        async def models(self, _key: str | None) -> list[dict[str, Any]]:
            raise UpstreamError(401, f"Incorrect API key provided: {key}")

    redactor = Redactor()
    redactor.remember(key)
    catalog = ModelCatalog(60.0, redactor)
    with caplog.at_level(logging.WARNING, logger="kilnbase.ai.catalog"):
        assert asyncio.run(catalog.models(Down(), key)) is None  # type: ignore[arg-type]
    assert "Incorrect API key provided: [redacted]" in caplog.text
    assert key not in caplog.text
