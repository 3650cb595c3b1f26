"""The functions host in tests: the settings of a module that runs it, and waiting for what it serves."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from kilnbase.config import FunctionsSettings, Settings
from tests.support.app import admin_headers


def host_settings(upload_limit: int | None = None, **functions: Any) -> Any:
    """The `settings` fixture of a module that runs the host (on `host_port`): one worker per function, small
    heaps, a short stall, and `functions` besides."""

    @pytest.fixture(scope="module")
    def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory, host_port: int) -> Settings:
        defaults: dict[str, Any] = {
            "workers_per_function": 1,
            "memory_mb": 64,
            "host_stall_seconds": 1.5,
            "start_timeout_seconds": 3,
        }
        limits: dict[str, Any] = {} if upload_limit is None else {"max_upload_body_bytes": upload_limit}
        return Settings(
            database_url=database_url,
            data_dir=tmp_path_factory.mktemp("data"),
            functions=FunctionsSettings(host_port=host_port, **{**defaults, **functions}),
            **limits,
        )

    return settings


def until(host: httpx.Client, path: str, wanted: Callable[[httpx.Response], bool]) -> httpx.Response:
    """The host's answer once `wanted` holds (changes reach it through NOTIFY, within moments; on a loaded
    2-core machine a deploy's `deno check` and a host restart behind it took more than 20 s once)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            response: httpx.Response | None = host.get(path)
        except httpx.TransportError:  # (restarting)
            response = None
        if response is not None and wanted(response):
            return response
        assert time.monotonic() < deadline, response.text if response is not None else "no answer"
        time.sleep(0.05)


def served(host: httpx.Client, slug: str) -> httpx.Response:
    return until(host, f"/{slug}", lambda r: r.status_code != 404)


def until_hosted(client: TestClient, slug: str) -> None:
    """Wait until the host has loaded `slug` (for code that cannot be called just to find out)."""
    deadline = time.monotonic() + 20
    while slug not in host_health(client)["served"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def host_health(client: TestClient) -> dict[str, Any]:
    """`runtime.host` of `GET /api/functions`."""
    listing = client.get("/api/functions", headers=admin_headers(client)).json()
    health: dict[str, Any] = listing["runtime"]["host"]
    return health
