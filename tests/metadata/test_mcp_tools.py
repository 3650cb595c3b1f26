"""The semantic layer's tools on Kilnbase's own MCP server (`/mcp`): backend metadata, one table, the agent
documents (public) and the log sources."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from tests.support.servers import ServerProcess

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def connected(server: ServerProcess, credential: str | None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client,
    ):
        yield client


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> Any:
    result = await client.call_tool(tool, arguments)
    block = result.content[0]
    assert isinstance(block, TextContent)
    assert not result.is_error, block.text
    return json.loads(block.text)


async def test_admin_tools(live_server: ServerProcess, live_keys: dict[str, str]) -> None:
    async with connected(live_server, live_keys["apiKey"]) as client:
        await _call(
            client, "run-raw-sql", {"query": "create table if not exists mcp_notes (id int primary key)"}
        )
        context = await _call(client, "get-backend-metadata", {})
        assert "### mcp_notes (0 rows; RLS on; anon: none)" in context["backend"]
        table = await _call(client, "describe-table", {"table": "mcp_notes"})
        assert table["mcp_notes"]["primaryKey"] == ["id"]
        logs = await _call(client, "get-container-logs", {"source": "insforge.logs", "limit": 3})
        assert len(logs["logs"]) <= 3 and live_keys["apiKey"] not in json.dumps(logs)


async def test_docs_tools_are_for_everyone(live_server: ServerProcess, live_keys: dict[str, str]) -> None:
    async with connected(live_server, live_keys["anonKey"]) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"fetch-docs", "fetch-sdk-docs"} <= names
        assert "get-backend-metadata" not in names
        instructions = await _call(client, "fetch-docs", {"docType": "instructions"})
        assert instructions.startswith("# Kilnbase backend: instructions for coding agents")
        python = await _call(client, "fetch-sdk-docs", {"sdkFeature": "auth", "sdkLanguage": "python"})
        assert "httpx" in python
