"""The built-in MCP server, driven by the official `mcp` client over both transports against a real
`kilnbase serve`: what each credential sees, what the tools do, what they refuse, and what the audit log
keeps of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from tests.support.servers import ServerProcess

pytestmark = pytest.mark.anyio

WRITE_TOOLS = {"run-raw-sql", "create-table", "delete-table", "apply-migration", "bulk-upsert"}


@asynccontextmanager
async def http_client(
    server: ServerProcess, credential: str | None, query: str = "", session: str | None = None
) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    if session is not None:
        headers["X-Agent-Session"] = session
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(f"{server.url}/mcp{query}", http_client=http)) as client,
    ):
        yield client


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def error_of(result: CallToolResult) -> dict[str, Any]:
    """The API's error body inside a tool error ("Error executing tool x: {...}")."""
    assert result.is_error
    text = text_of(result)
    body: dict[str, Any] = json.loads(text[text.index("{") :])
    return body


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, text_of(result)
    return json.loads(text_of(result))


async def tool_names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


def table_name() -> str:
    return f"mcp_{uuid.uuid4().hex[:10]}"


async def test_the_api_key_sees_read_and_write_tools(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    async with http_client(live_server, live_keys["apiKey"]) as client:
        names = await tool_names(client)
    assert {"list-tables", "get-table-schema", "dry-run-migration"} <= names
    assert names >= WRITE_TOOLS


async def test_read_only_and_features_narrow_the_list(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    async with http_client(live_server, live_keys["apiKey"], "?read_only=true") as client:
        read_only = await tool_names(client)
        refused = await client.call_tool("run-raw-sql", {"query": "select 1"})
    assert "list-tables" in read_only
    assert not (WRITE_TOOLS & read_only)
    assert error_of(refused)["error"] == "READ_ONLY_CONNECTION"

    async with http_client(live_server, live_keys["apiKey"], "?features=auth") as client:
        assert not ({"list-tables", "run-raw-sql"} & await tool_names(client))


async def test_the_anon_key_sees_no_admin_tool_and_cannot_call_one(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    async with http_client(live_server, live_keys["anonKey"]) as client:
        names = await tool_names(client)
        refused = await client.call_tool("run-raw-sql", {"query": "select 1"})
    assert not ({"list-tables", "run-raw-sql", "create-table"} & names)
    assert refused.is_error


def test_no_credential_is_401_before_mcp_reads_anything(live_server: ServerProcess) -> None:
    response = httpx.post(
        f"{live_server.url}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Accept": "application/json, text/event-stream"},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "AUTH_INVALID_CREDENTIALS"


async def test_a_table_made_through_tools_works_and_is_audited_with_its_tool(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    name = table_name()
    async with http_client(live_server, live_keys["apiKey"]) as client:
        created = await call(
            client,
            "create-table",
            {"tableName": name, "columns": [{"columnName": "title", "type": "string", "isNullable": False}]},
        )
        await call(
            client, "run-raw-sql", {"query": f"insert into {name} (title) values ($1)", "params": ["hi"]}
        )
        selected = await call(client, "run-raw-sql", {"query": f"select title from {name}"})
        schema = await call(client, "get-table-schema", {"tableName": name})
        tables = await call(client, "list-tables", {})
    assert created["tableName"] == name
    assert selected["rows"] == [{"title": "hi"}]
    assert [c["columnName"] for c in schema["columns"]][:2] == ["id", "title"]
    assert name in tables

    audits = httpx.get(
        f"{live_server.url}/api/logs/audits",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {live_keys['apiKey']}"},
    ).json()
    entries = audits["data"] if isinstance(audits, dict) else audits
    service_entry = next(
        e for e in entries if e["action"] == "CREATE_TABLE" and e["details"].get("table") == name
    )
    assert service_entry["tool"] == "create-table"
    tool_entries = [
        e for e in entries if e["action"] == "TOOL_CALL" and e["details"]["tool"] == "create-table"
    ]
    assert any(e["details"]["arguments"]["tableName"] == name for e in tool_entries)


async def test_a_service_refusal_is_a_tool_error_in_the_apis_words(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    async with http_client(live_server, live_keys["apiKey"]) as client:
        missing = await client.call_tool("get-table-schema", {"tableName": table_name()})
        guarded = await client.call_tool("run-raw-sql", {"query": "alter system set work_mem = '1GB'"})
        invalid = await client.call_tool("create-table", {"tableName": "", "columns": []})
    assert error_of(missing)["statusCode"] == 404
    assert error_of(missing)["error"] == "DATABASE_NOT_FOUND"
    assert error_of(guarded)["statusCode"] in (400, 403)
    assert invalid.is_error  # the input schema refuses an empty name before the service runs


async def test_a_large_result_is_cut_with_a_note_saying_how_to_page(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    async with http_client(live_server, live_keys["apiKey"]) as client:
        result = await call(
            client,
            "run-raw-sql",
            {"query": "select n, repeat('x', 40) as pad from generate_series(1, 5000) n"},
        )
    assert 0 < len(result["rows"]) < 5000
    assert result["rows"][0] == {"n": 1, "pad": "x" * 40}
    assert "left out" in result["truncated"]


async def test_secrets_in_arguments_are_masked_in_the_audit_log(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    from kilnbase.mcp_server.results import masked_arguments

    masked = masked_arguments(
        {"password": "hunter2", "apiKey": "ik_x", "query": "q" * 30_000, "upsertKey": "id"}
    )
    assert masked["password"] == "***"
    assert masked["apiKey"] == "***"
    assert masked["upsertKey"] == "id"
    assert len(masked["query"]) < 21_000


def stdio_parameters(server: ServerProcess, *args: str) -> StdioServerParameters:
    env = {k: v for k, v in server.env.items() if k in ("DATABASE_URL", "PATH", "HOME", "LANG")}
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "kilnbase", "mcp", "--data-dir", str(server.data_dir), *args],
        env={**env, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


async def test_stdio_beside_a_running_server(live_server: ServerProcess, live_keys: dict[str, str]) -> None:
    name = table_name()
    async with Client(stdio_parameters(live_server), read_timeout_seconds=60) as client:
        names = await tool_names(client)
        await call(client, "run-raw-sql", {"query": f"create table {name} (id int primary key)"})
        tables = await call(client, "list-tables", {})
    assert names >= WRITE_TOOLS
    assert name in tables

    async with Client(stdio_parameters(live_server, "--read-only"), read_timeout_seconds=60) as client:
        read_only = await tool_names(client)
    assert "list-tables" in read_only
    assert not (WRITE_TOOLS & read_only)


def test_stdio_with_a_bad_credential_exits_saying_so(live_server: ServerProcess) -> None:
    parameters = stdio_parameters(live_server, "--api-key", "ik_" + "0" * 32)
    finished = subprocess.run(
        [parameters.command, *parameters.args],
        env=parameters.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 1
    assert "not valid: invalid API key" in finished.stderr
    assert finished.stdout == ""  # standard output is the protocol's: nothing else goes there


async def test_stdio_with_the_anon_key_offers_no_admin_tool(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    parameters = stdio_parameters(live_server, "--api-key", live_keys["anonKey"])
    async with Client(parameters, read_timeout_seconds=60) as client:
        assert not ({"list-tables", "run-raw-sql"} & await tool_names(client))


async def test_users_found_and_deleted_through_tools(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    signed_up = httpx.post(
        f"{live_server.url}/api/auth/users",
        json={"email": email, "password": "correct-horse-9"},
        headers={"Authorization": f"Bearer {live_keys['anonKey']}"},
    )
    assert signed_up.status_code in (200, 201), signed_up.text
    async with http_client(live_server, live_keys["apiKey"]) as client:
        found = await call(client, "list-users", {"search": email})
        [user] = found["data"]
        assert (await call(client, "get-user", {"userId": user["id"]}))["email"] == email
        assert await call(client, "delete-users", {"userIds": [user["id"]]}) == {"deletedCount": 1}
        assert (await call(client, "list-users", {"search": email}))["data"] == []
        audit = await call(client, "search-audit-logs", {"action": "DELETE_USERS", "module": "AUTH"})
    assert any(e["details"]["userIds"] == [user["id"]] and e["tool"] == "delete-users" for e in audit["data"])


async def test_keys_settings_and_gateway_reads(live_server: ServerProcess, live_keys: dict[str, str]) -> None:
    async with http_client(live_server, live_keys["apiKey"]) as client:
        anon = await call(client, "get-anon-key", {})
        config = await call(client, "get-auth-config", {})
        configurations = await call(client, "list-ai-configurations", {})
        usage = await call(client, "get-ai-usage-summary", {})
    assert anon == {"anonKey": live_keys["anonKey"]}
    assert "requireEmailVerification" in config
    assert isinstance(configurations, list)
    assert "byModel" in usage


def agent_key(server: ServerProcess, api_key: str, scopes: list[str]) -> str:
    response = httpx.post(
        f"{server.url}/api/agents/keys",
        json={"name": f"mcp-{uuid.uuid4().hex[:6]}", "scopes": scopes},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


async def test_an_agent_key_sees_the_tools_its_scopes_name(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    reader = agent_key(live_server, live_keys["apiKey"], ["*:read"])
    one_tool = agent_key(live_server, live_keys["apiKey"], ["tool:list-tables"])
    async with http_client(live_server, reader) as client:
        names = await tool_names(client)
        refused = await client.call_tool("create-table", {"tableName": table_name(), "columns": []})
        tables = await call(client, "list-tables", {})
    assert {"list-tables", "list-users", "search-audit-logs"} <= names
    assert not (WRITE_TOOLS & names)
    assert refused.is_error
    assert isinstance(tables, list)
    async with http_client(live_server, one_tool) as client:
        assert await tool_names(client) == {"list-tables", "get-change-request", "list-change-requests"}


async def test_an_agents_tool_calls_name_its_key(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    writer = agent_key(live_server, live_keys["apiKey"], ["database:write"])
    name = table_name()
    async with http_client(live_server, writer) as client:
        await call(client, "run-raw-sql", {"query": f"create table {name} (id int)"})
    audits = httpx.get(
        f"{live_server.url}/api/logs/audits",
        params={"limit": 100, "action": "TOOL_CALL"},
        headers={"Authorization": f"Bearer {live_keys['apiKey']}"},
    ).json()
    entries = audits["data"] if isinstance(audits, dict) else audits
    [entry] = [e for e in entries if name in str(e["details"]["arguments"].get("query", ""))]
    assert entry["actor"].startswith("agent:mcp-")
    assert entry["agentKey"] is not None


async def test_a_retried_tool_call_with_its_idempotency_key_runs_once(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    name = table_name()
    key = uuid.uuid4().hex
    insert = {"query": f"insert into {name} (id) values (1) returning id", "idempotencyKey": key}
    async with http_client(live_server, live_keys["apiKey"]) as client:
        await call(client, "run-raw-sql", {"query": f"create table {name} (id int)"})
        first = await call(client, "run-raw-sql", insert)
        again = await call(client, "run-raw-sql", insert)
        other = await client.call_tool("run-raw-sql", {**insert, "query": f"delete from {name}"})
        count = await call(client, "run-raw-sql", {"query": f"select count(*)::int as n from {name}"})
    assert first == again == {"rows": [{"id": 1}], "rowCount": 1, "fields": first["fields"]}
    assert error_of(other)["error"] == "IDEMPOTENCY_KEY_REUSED"
    assert count["rows"] == [{"n": 1}]


async def test_read_tools_take_no_idempotency_key(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    async with http_client(live_server, live_keys["apiKey"]) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert "idempotencyKey" in tools["run-raw-sql"].input_schema["properties"]
    assert "idempotencyKey" not in tools["list-tables"].input_schema["properties"]


async def test_a_write_naming_an_old_schema_version_is_refused(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    name = table_name()
    async with http_client(live_server, live_keys["apiKey"]) as client:
        metadata = await call(client, "get-backend-metadata", {})
        fingerprint = metadata["schemaFingerprint"]
        created = await call(
            client,
            "run-raw-sql",
            {"query": f"create table {name} (id int)", "expectedSchemaVersion": fingerprint},
        )
        stale = await client.call_tool(
            "run-raw-sql", {"query": f"drop table {name}", "expectedSchemaVersion": fingerprint}
        )
        tables = await call(client, "list-tables", {})
    assert created["rows"] == []
    refused = error_of(stale)
    assert refused["error"] == "SCHEMA_CHANGED"
    assert fingerprint in refused["message"]
    assert name in tables  # the stale drop did not run
