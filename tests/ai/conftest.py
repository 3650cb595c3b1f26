"""Fixtures for the gateway: the scripted upstream, and the whole app served by uvicorn on loopback (the
`openai` SDK needs a real HTTP server), with OpenRouter's base URL pointing at the fake."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pytest
import uvicorn

from kilnbase.app import create_app
from kilnbase.config import Settings
from tests.support.fake_openrouter import FakeOpenRouter
from tests.support.servers import free_port
from tests.support.side_sql import Sql, sql_runner
from tests.support.side_sql import wait_for as wait_for  # (the gateway tests import it from here)

T = TypeVar("T")


class AppServer:
    """`create_app(settings)` under uvicorn in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=lambda: self.loop.run_until_complete(self.server.serve()), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AppServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the app did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenRouter]:
    upstream = FakeOpenRouter().start()
    yield upstream
    upstream.stop()


def gateway_settings(database_url: str, data_dir: Path, fake: FakeOpenRouter, **overrides: Any) -> Settings:
    """Settings for a gateway whose OpenRouter is the fake: quick retries, the policy never cached, a breaker
    that stays closed; `overrides` change any of it."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "openrouter_base_url": fake.url,
        "openrouter_api_key": "sk-or-v1-fake",
        "ai_retry_base_delay": 0.01,
        "ai_retry_max_delay": 2.0,
        "ai_policy_ttl": 0.0,
        "ai_breaker_threshold": 1000,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture(scope="module")
def ai_settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenRouter
) -> Settings:
    return gateway_settings(database_url, tmp_path_factory.mktemp("ai-data"), fake)


@pytest.fixture(scope="module")
def server(ai_settings: Settings) -> Iterator[AppServer]:
    app_server = AppServer(ai_settings).start()
    yield app_server
    app_server.stop()


@pytest.fixture(scope="module")
def api_key(ai_settings: Settings, server: AppServer) -> str:
    stored = json.loads(Path(ai_settings.data_dir, "keys.json").read_text())
    key: str = stored["api_key"]
    return key


@pytest.fixture(scope="module")
def anon_key(ai_settings: Settings, server: AppServer) -> str:
    stored = json.loads(Path(ai_settings.data_dir, "keys.json").read_text())
    key: str = stored["anon_key"]
    return key


@pytest.fixture
def admin(
    server: AppServer, api_key: str, fake: FakeOpenRouter, sql: Callable[..., list[dict[str, Any]]]
) -> Iterator[httpx2.Client]:
    """The admin API with the project's API key, after putting the gateway back to its defaults: no limits,
    no prices, no counters, the default policy, no BYOK key, no registered provider, a fresh script."""
    fake.reset()
    with httpx2.Client(base_url=server.url, headers={"authorization": f"Bearer {api_key}"}, timeout=60) as c:
        for path in ("/api/ai/limits", "/api/ai/prices", "/api/ai/providers"):
            rows = c.get(path).json()
            for row in rows if isinstance(rows, list) else []:
                name = row.get("name") or row.get("modelId") or f"{row['scope']}/{row['subject']}"
                c.delete(f"{path}/{name}")
        c.put("/api/ai/policy", json={})
        c.delete("/api/ai/gateway/config")
        sql("delete from ai.counters")
        server.app.services.ai.gateway.breaker.reset()
        yield c


@pytest.fixture(scope="module")
def sql(database_url: str) -> Iterator[Sql]:
    """Run SQL against the module's database (autocommit) and return the rows."""
    with sql_runner(database_url) as run:
        yield run


#: The ledger's `key_source` of each provider kind `use_provider_kind` sets up.
KEY_SOURCES = {"env": "env", "byok": "byok", "managed": "managed", "registered": "provider"}


def use_provider_kind(
    kind: str, admin: httpx2.Client, fake: FakeOpenRouter, model: str, provider: str = "groq"
) -> str:
    """Make `kind` serve the next calls of `model` (an OpenRouter id): the environment's OpenRouter key, a
    BYOK key, a managed key (the server needs the managed source configured) or a registered provider called
    `provider`, pointed at the fake. Returns the model id to call."""
    admin.delete("/api/ai/gateway/config")
    fake.managed_key = None
    if kind == "byok":
        key = "sk-or-v1-byok-" + secrets.token_hex(8)
        fake.valid_keys.add(key)
        assert admin.post("/api/ai/gateway/config", json={"apiKey": key}).json()["source"] == "byok"
    elif kind == "managed":
        fake.managed_key = "sk-or-v1-managed-" + secrets.token_hex(8)
        fake.valid_keys.add(fake.managed_key)
    elif kind == "registered":
        key = "gsk_" + secrets.token_hex(16)
        fake.valid_keys.add(key)
        put = admin.put(f"/api/ai/providers/{provider}", json={"baseUrl": fake.url, "apiKey": key})
        assert put.is_success
        return f"{provider}/{model}"
    return model


def a_fresh_minute(seconds: float = 10.0) -> None:
    """Wait, if need be, until the current UTC minute has `seconds` left: request limits count per fixed
    minute, so a test that counts requests against one must not straddle two."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.05)
