"""A tool that fails on a fault of the server's (not an `ApiError`), with the MCP server in process: the
agent reads why as the HTTP API words a 500, and the audit log keeps the failed call like any other."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from kilnbase import audit
from kilnbase.app import capabilities, running
from kilnbase.capability import Capability, Tool
from kilnbase.config import Settings
from kilnbase.identity.actor import Actor
from kilnbase.identity.principal import API_KEY_HOLDER
from kilnbase.keys.project_keys import load_project_keys
from kilnbase.mcp_server.approvals import Approvals
from kilnbase.mcp_server.server import build_server
from kilnbase.services import Services, build_core, build_services
from tests.mcp_server.test_mcp_server import error_of

pytestmark = pytest.mark.anyio


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    settings = Settings(database_url=database_url, data_dir=tmp_path)
    built = build_services(build_core(settings, load_project_keys(settings), database_url))
    async with running(built, capabilities(built), background=False):  # (as `kilnbase mcp` does)
        yield built


async def _breaks(actor: Actor, note: str) -> dict[str, str]:
    raise RuntimeError("a bug, not the caller's mistake")


async def test_an_unexpected_failure_says_so_and_is_audited(services: Services) -> None:
    broken = Capability("broken", (), tools=[Tool("break-things", "Fails.", _breaks, read_only=False)])
    server = build_server(
        [broken],
        services.core,
        Approvals(services.core.database, services.core.agent_keys),
        services.metadata.schema_fingerprint,
        stdio_principal=lambda: API_KEY_HOLDER,
    )
    async with Client(server) as client:
        result = await client.call_tool("break-things", {"note": "hi"})
    error = error_of(result)
    assert error["statusCode"] == 500 and error["error"] == "INTERNAL_ERROR"
    assert error["nextActions"]
    assert "a bug" not in error["message"]  # what failed inside stays in the server's log
    rows, _total = await audit.search(services.core.database, limit=5, offset=0, module="MCP")
    assert [(r["details"]["tool"], r["outcome"]) for r in rows[:1]] == [("break-things", "failed")]
