"""A function nobody calls gives its workers back after `idle_seconds`, and the next call starts them."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from kilnbase.config import FunctionsSettings, Settings
from tests.functions.conftest import Deploy


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        functions=FunctionsSettings(workers_per_function=1, idle_seconds=0.4),
    )


def test_idle_function_stops_its_workers_and_restarts_on_call(
    client: TestClient, admin: dict[str, str], deploy: Deploy
) -> None:
    slug = deploy("export default () => new Response('awake');")
    assert client.get(f"/functions/{slug}").text == "awake"
    deadline = time.monotonic() + 15
    while slug in client.get("/api/functions", headers=admin).json()["runtime"]["warmFunctions"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.get(f"/functions/{slug}").text == "awake"
