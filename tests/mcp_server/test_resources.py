"""MCP resources on a real `kilnbase serve`: the backend metadata, one table, and the agent documents,
listed and read as the caller."""

from __future__ import annotations

import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import TextResourceContents

from tests.mcp_server.test_mcp_server import agent_key, call, http_client, table_name
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.anyio


def text(result: object) -> str:
    [content] = result.contents  # type: ignore[attr-defined]
    assert isinstance(content, TextResourceContents)
    return content.text


async def test_the_api_key_lists_and_reads_every_resource(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    name = table_name()
    async with http_client(live_server, live_keys["apiKey"]) as client:
        await call(client, "run-raw-sql", {"query": f"create table {name} (id int primary key, title text)"})
        listed = {str(r.uri) for r in (await client.list_resources()).resources}
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        backend = text(await client.read_resource("kilnbase://metadata"))
        table = text(await client.read_resource(f"kilnbase://metadata/{name}"))
        instructions = text(await client.read_resource("kilnbase://docs/instructions"))
        with pytest.raises(MCPError) as missing:
            await client.read_resource(f"kilnbase://metadata/{table_name()}")
        with pytest.raises(MCPError) as unknown_doc:
            await client.read_resource("kilnbase://docs/nothing")
    assert listed == {"kilnbase://metadata"}
    assert templates == {"kilnbase://metadata/{table}", "kilnbase://docs/{docType}"}
    assert "schema fingerprint:" in backend and name in backend
    assert '"title"' in table and name in table
    assert "Kilnbase" in instructions
    assert "TABLE_NOT_FOUND" in str(missing.value)
    assert "NOT_FOUND" in str(unknown_doc.value)


async def test_the_anon_key_reads_the_docs_only(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    async with http_client(live_server, live_keys["anonKey"]) as client:
        listed = list((await client.list_resources()).resources)
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        docs = text(await client.read_resource("kilnbase://docs/db-sdk"))
        with pytest.raises(MCPError):
            await client.read_resource("kilnbase://metadata")
    assert listed == []
    assert templates == {"kilnbase://docs/{docType}"}
    assert docs


async def test_an_agent_key_reads_metadata_only_with_its_scope(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    reader = agent_key(live_server, live_keys["apiKey"], ["metadata:read"])
    other = agent_key(live_server, live_keys["apiKey"], ["storage:read"])
    async with http_client(live_server, reader) as client:
        assert "schema fingerprint:" in text(await client.read_resource("kilnbase://metadata"))
    async with http_client(live_server, other) as client:
        assert list((await client.list_resources()).resources) == []
        with pytest.raises(MCPError):
            await client.read_resource("kilnbase://metadata")
        assert text(await client.read_resource("kilnbase://docs/instructions"))
