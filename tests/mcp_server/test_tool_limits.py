"""Per-credential limits on tool calls, with the MCP server in process (the `mcp` client connects to it
directly): the services, database and audit are real, only the transport is skipped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client
from starlette.testclient import TestClient

from kilnbase.app import capabilities, create_app, running
from kilnbase.config import McpSettings, Settings
from kilnbase.identity.principal import API_KEY_HOLDER
from kilnbase.keys.project_keys import load_project_keys
from kilnbase.mcp_server.approvals import Approvals
from kilnbase.mcp_server.server import build_server
from kilnbase.services import Services, build_core, build_services
from tests.mcp_server.test_mcp_server import error_of
from tests.support.app import anon_headers, mcp_call

pytestmark = pytest.mark.anyio


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    settings = Settings(
        database_url=database_url, data_dir=tmp_path, mcp=McpSettings(tool_calls_per_minute=3)
    )
    built = build_services(build_core(settings, load_project_keys(settings), database_url))
    async with running(built, capabilities(built), background=False):  # (as `kilnbase mcp` does)
        yield built


async def test_calls_past_the_limit_are_429_until_the_minute_passes(services: Services) -> None:
    offered = capabilities(services)
    server = build_server(
        offered,
        services.core,
        Approvals(services.core.database, services.core.agent_keys),
        services.metadata.schema_fingerprint,
        stdio_principal=lambda: API_KEY_HOLDER,
    )
    async with Client(server) as client:
        results = [await client.call_tool("list-tables", {}) for _ in range(4)]
    assert [r.is_error for r in results] == [False, False, False, True]
    refused = error_of(results[3])
    assert refused["statusCode"] == 429
    assert "3 a minute" in refused["message"]


def test_anonymous_callers_are_limited_each_by_address(database_url: str, tmp_path: Path) -> None:
    """The anon key is every visitor's: one visitor past the limit is refused, another address is not."""
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path,
        trusted_proxies="10.0.0.0/8",  # (the environment's form)
        mcp=McpSettings(tool_calls_per_minute=3),
    )
    app = create_app(settings)
    with TestClient(app, client=("10.0.0.1", 50000)) as client:
        anon = anon_headers(client)

        def limited(visitor: str) -> bool:
            headers = {**anon, "X-Forwarded-For": visitor}
            text = mcp_call(client, headers, "fetch-docs", {"docType": "instructions"})
            return "RATE_LIMITED" in text

        assert [limited("192.0.2.1") for _ in range(4)] == [False, False, False, True]
        assert not limited("192.0.2.2")
        assert limited("192.0.2.1")
