"""Fixtures for agent memory: the app over the module's database, its gateway pointed at the scripted
OpenRouter (whose embeddings put texts that share words close together), and SQL on the side."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from kilnbase.config import Settings
from tests.support.fake_openrouter import FakeOpenRouter
from tests.support.side_sql import Sql, sql_runner


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenRouter]:
    upstream = FakeOpenRouter().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenRouter) -> Settings:
    """Quick retries, the policy never cached, a breaker that stays closed (failures are scripted)."""
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("memory-data"),
        openrouter_base_url=fake.url,
        openrouter_api_key="sk-or-v1-fake",
        ai_retry_base_delay=0.01,
        ai_retry_max_delay=0.05,
        ai_policy_ttl=0.0,
        ai_breaker_threshold=1000,
    )


@pytest.fixture(autouse=True)
def fresh_script(fake: FakeOpenRouter) -> None:
    fake.reset()


@pytest.fixture
def scope() -> str:
    """A scope of this test's own: tests never see each other's memories, in any order."""
    return f"test-{secrets.token_hex(6)}"


@pytest.fixture(scope="module")
def sql(database_url: str) -> Iterator[Sql]:
    with sql_runner(database_url) as run:
        yield run
