"""What an agent meets on `/mcp` when it calls tools as a prompt written for InsForge's MCP server tells it
to, and when it gets a call wrong: each call either works or fails as a tool error (`isError`) whose text
says what went wrong and what to do next; never a silent success that did nothing."""

from __future__ import annotations

import json

import httpx
import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS

from kilnbase.mcp_server.tool_routes import ROUTE_TOOLS
from tests.mcp_server.test_mcp_server import agent_key, error_of, http_client, text_of, tool_names
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.anyio


async def test_the_docs_tools_take_insforges_argument_names(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """`@insforge/mcp`: `fetch-docs {docType}`, `fetch-sdk-docs {sdkFeature, sdkLanguage}`."""
    async with http_client(live_server, live_keys["apiKey"]) as client:
        instructions = await client.call_tool("fetch-docs", {"docType": "instructions"})
        sdk = await client.call_tool("fetch-sdk-docs", {"sdkFeature": "db", "sdkLanguage": "typescript"})
        swift = await client.call_tool("fetch-sdk-docs", {"sdkFeature": "db", "sdkLanguage": "swift"})
    assert not instructions.is_error, text_of(instructions)
    assert json.loads(text_of(instructions)).startswith("# ")
    assert not sdk.is_error, text_of(sdk)
    # A language InsForge documents and this server does not: a tool error that says where to look instead.
    assert error_of(swift)["error"] == "DOCS_NOT_FOUND"
    assert "rest-api" in error_of(swift)["nextActions"]


async def test_an_argument_the_tool_does_not_take_is_refused_not_ignored(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """`create-bucket` takes `isPublic`; an agent that writes `public: false` must not get a public bucket
    (the MCP spec: servers validate tool inputs)."""
    async with http_client(live_server, live_keys["apiKey"]) as client:
        refused = await client.call_tool("create-bucket", {"bucketName": "misnamed", "public": False})
        buckets = json.loads(text_of(await client.call_tool("list-buckets", {})))
        # InsForge's tools all take an optional `apiKey`: a prompt written for them still works.
        made = await client.call_tool(
            "create-bucket", {"bucketName": "named", "isPublic": False, "apiKey": "x"}
        )
    error = error_of(refused)
    assert error["statusCode"] == 400
    assert "public" in error["message"] and "isPublic" in error["message"]
    assert "isPublic" in error["nextActions"]
    assert "misnamed" not in [bucket["name"] for bucket in buckets]
    assert not made.is_error, text_of(made)


async def test_a_tool_the_credential_may_not_use_is_refused_with_the_reason(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """A read-only agent key calling a write tool hears what REST tells it (403, the scope it lacks, who to
    ask), not `Unknown tool` for a tool its docs name."""
    reader = agent_key(live_server, live_keys["apiKey"], ["*:read"])
    async with http_client(live_server, reader) as client:
        by_agent = await client.call_tool("run-raw-sql", {"query": "delete from nowhere"})
        missing = await client.call_tool("no-such-tool", {})
    async with http_client(live_server, live_keys["anonKey"]) as client:
        by_anon = await client.call_tool("run-raw-sql", {"query": "select 1"})
    async with http_client(live_server, live_keys["apiKey"], "?features=storage") as client:
        unconnected = await client.call_tool("run-raw-sql", {"query": "select 1"})

    refusal = error_of(by_agent)
    assert refusal["statusCode"] == 403 and "database:write" in refusal["message"]
    assert "/api/agents/keys" in refusal["nextActions"]
    assert error_of(by_anon)["statusCode"] == 403 and "admin API key" in error_of(by_anon)["message"]
    assert "features" in error_of(unconnected)["nextActions"]
    assert missing.is_error and "Unknown tool: no-such-tool" in text_of(missing)


async def test_invoking_a_function_no_url_serves_is_a_tool_error(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """A mistyped slug or a draft is the tool's failure (isError), told apart from a function's own 404."""
    code = "export default async function (): Promise<Response> { return new Response('hi'); }"
    async with http_client(live_server, live_keys["apiKey"]) as client:
        draft = await client.call_tool(
            "create-function", {"name": "drafted", "code": code, "status": "draft"}
        )
        missing = await client.call_tool("invoke-function", {"slug": "no-such-function"})
        inactive = await client.call_tool("invoke-function", {"slug": "drafted"})
    assert not draft.is_error, text_of(draft)
    assert error_of(missing)["statusCode"] == 404
    assert "list-functions" in error_of(missing)["nextActions"]
    assert "draft" in error_of(inactive)["message"]
    assert "active" in error_of(inactive)["nextActions"]


async def test_a_malformed_user_id_is_a_400_not_an_unexpected_error(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """As `DELETE /api/auth/users` answers it: INVALID_INPUT, saying what an id looks like."""
    async with http_client(live_server, live_keys["apiKey"]) as client:
        refused = await client.call_tool("delete-users", {"userIds": ["not-a-uuid"]})
    error = error_of(refused)
    assert error["statusCode"] == 400 and error["error"] == "INVALID_INPUT"
    assert "UUID" in error["nextActions"]


async def test_a_schema_change_that_changes_nothing_is_refused(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """`changes` takes InsForge's update-schema keys; a misspelt one must not report success."""
    column = {"columnName": "note", "type": "string", "isNullable": True}
    async with http_client(live_server, live_keys["apiKey"]) as client:
        await client.call_tool(
            "create-table", {"tableName": "changed", "columns": [{"columnName": "title", "type": "string"}]}
        )
        misspelt = await client.call_tool(
            "update-table-schema", {"tableName": "changed", "changes": {"addColumn": [column]}}
        )
        empty = await client.call_tool("update-table-schema", {"tableName": "changed", "changes": {}})
        added = await client.call_tool(
            "update-table-schema", {"tableName": "changed", "changes": {"addColumns": [column]}}
        )
    assert "addColumn" in error_of(misspelt)["message"]
    assert "addColumns" in error_of(misspelt)["nextActions"]
    assert error_of(empty)["statusCode"] == 400
    assert not added.is_error, text_of(added)
    assert json.loads(text_of(added))["operations"]


async def test_logs_of_a_function_that_does_not_exist_are_a_404(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """An empty list would read as "deployed and never called" to an agent that mistyped the slug."""
    code = "export default async function (): Promise<Response> { return new Response('hi'); }"
    async with http_client(live_server, live_keys["apiKey"]) as client:
        await client.call_tool("create-function", {"name": "quiet", "code": code})
        quiet = await client.call_tool("get-function-logs", {"slug": "quiet"})
        missing = await client.call_tool("get-function-logs", {"slug": "no-such-function"})
    assert json.loads(text_of(quiet))["logs"] == []
    assert error_of(missing)["error"] == "FUNCTION_NOT_FOUND"


async def test_text_uploaded_without_a_type_is_not_stored_as_octet_stream(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """Text has no magic number to detect; the key's extension, else text/plain, says what it is."""
    async with http_client(live_server, live_keys["apiKey"]) as client:
        await client.call_tool("create-bucket", {"bucketName": "texts"})
        readme = await client.call_tool(
            "upload-object", {"bucketName": "texts", "key": "README", "text": "hi"}
        )
        rows = await client.call_tool(
            "upload-object", {"bucketName": "texts", "key": "data/rows.csv", "text": "id,name\n1,ada\n"}
        )
    assert json.loads(text_of(readme))["mimeType"].startswith("text/plain")
    assert json.loads(text_of(rows))["mimeType"] == "text/csv"


async def test_text_that_is_json_stays_text(live_server: ServerProcess, live_keys: dict[str, str]) -> None:
    """A JSON file uploaded as `text` is that text (not an object the SDK parsed it into); a list sent as
    JSON text to a list parameter is still read as the list."""
    async with http_client(live_server, live_keys["apiKey"]) as client:
        await client.call_tool("create-bucket", {"bucketName": "jsons"})
        config = await client.call_tool(
            "upload-object", {"bucketName": "jsons", "key": "config.json", "text": '{"a": 1}'}
        )
        null = await client.call_tool(
            "upload-object", {"bucketName": "jsons", "key": "null.txt", "text": "null"}
        )
        listed = await client.call_tool("run-raw-sql", {"query": "select $1::text as v", "params": '["x"]'})
    assert not config.is_error, text_of(config)
    assert json.loads(text_of(config))["size"] == len('{"a": 1}')
    assert json.loads(text_of(config))["mimeType"] == "application/json"
    assert not null.is_error, text_of(null)
    assert json.loads(text_of(null))["size"] == 4
    assert json.loads(text_of(listed))["rows"] == [{"v": "x"}]


async def test_a_date_that_is_not_iso_8601_is_refused_not_read_as_a_time(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """Postgres reads `yesterday` as a time; the agent must hear which argument to write how, as
    `GET /api/ai/usage/summary?startDate=yesterday` tells it."""
    async with http_client(live_server, live_keys["apiKey"]) as client:
        word = await client.call_tool("get-ai-usage-summary", {"startDate": "yesterday"})
        slashes = await client.call_tool("get-ai-usage-summary", {"endDate": "04/18/2026"})
        iso = await client.call_tool(
            "get-ai-usage-summary", {"startDate": "2026-04-18", "endDate": "2026-04-19T09:15:00Z"}
        )
    assert error_of(word)["statusCode"] == 400 and error_of(word)["error"] == "INVALID_INPUT"
    assert "startDate" in error_of(word)["message"] and "ISO 8601" in error_of(word)["message"]
    assert "2026-04-18" in error_of(word)["nextActions"]
    assert "endDate" in error_of(slashes)["message"]
    assert not iso.is_error, text_of(iso)


async def test_listing_a_schema_that_does_not_exist_is_a_404_and_an_empty_one_is_empty(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """An empty list would read as "no tables yet" to an agent that mistyped the schema."""
    async with http_client(live_server, live_keys["apiKey"]) as client:
        await client.call_tool("run-raw-sql", {"query": "create schema if not exists bare"})
        bare = await client.call_tool("list-tables", {"schema": "bare"})
        bare_policies = await client.call_tool(
            "list-database-objects", {"kind": "policies", "schema": "bare"}
        )
        tables = await client.call_tool("list-tables", {"schema": "pubilc"})
        triggers = await client.call_tool("list-database-objects", {"kind": "triggers", "schema": "pubilc"})
    assert json.loads(text_of(bare)) == []
    assert json.loads(text_of(bare_policies)) == {"policies": []}
    for missing in (tables, triggers):
        assert error_of(missing)["statusCode"] == 404
        assert "pubilc" in error_of(missing)["message"]


async def test_arguments_that_do_not_fit_the_schema_are_one_clear_tool_error(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """Not pydantic's report (a model name the agent never saw, a link to pydantic's docs): the argument,
    what is wrong with it, and what it takes, in the shape of every other refusal."""
    async with http_client(live_server, live_keys["apiKey"]) as client:
        word = await client.call_tool("list-users", {"limit": "many"})
        small = await client.call_tool("search-audit-logs", {"limit": 0})
        status = await client.call_tool("list-change-requests", {"status": "open"})
        missing = await client.call_tool("create-table", {"tableName": "nocolumns"})
        # JSON that orjson cannot write back (an integer past 64 bits) is still shown, not a crash.
        huge = await client.call_tool("list-users", {"limit": 10**30})
    for result in (word, small, status, missing, huge):
        assert "pydantic" not in text_of(result)
        assert "Arguments" not in text_of(result)
        assert error_of(result)["statusCode"] == 400 and error_of(result)["error"] == "INVALID_INPUT"
    assert "limit" in error_of(word)["message"] and '"many"' in error_of(word)["message"]
    assert "limit as an integer from 1 to 100" in error_of(word)["nextActions"]
    assert "from 1 to 200" in error_of(small)["nextActions"]
    assert '"pending"' in error_of(status)["nextActions"] and '"open"' in error_of(status)["message"]
    assert "columns is required" in error_of(missing)["message"]
    assert "columns as a list of objects" in error_of(missing)["nextActions"]
    assert str(10**30) in error_of(huge)["message"]


async def test_advice_names_the_tool_that_does_the_work_not_the_route(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """An agent on `/mcp` follows `nextActions` with a tool; REST keeps naming its routes."""
    async with http_client(live_server, live_keys["apiKey"]) as client:
        table = await client.call_tool("get-table-schema", {"tableName": "nosuch"})
        bucket = await client.call_tool("list-objects", {"bucketName": "nosuch"})
        schema = await client.call_tool("list-tables", {"schema": "nosuch"})
    rest = httpx.get(
        f"{live_server.url}/api/database/tables/nosuch/schema",
        headers={"Authorization": f"Bearer {live_keys['apiKey']}"},
    )
    assert error_of(table)["nextActions"] == "List the tables with the list-tables tool."
    assert "the create-bucket tool" in error_of(bucket)["nextActions"]
    assert "list-database-objects" in error_of(schema)["nextActions"]
    for result in (table, bucket, schema):
        assert "/api/" not in error_of(result)["nextActions"]
    assert rest.json()["nextActions"] == "List the tables with GET /api/database/tables."


async def test_every_tool_the_advice_names_is_one_the_admin_can_call(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """An error's advice on /mcp names a tool in place of a route: a tool renamed or removed would send
    agents to one that does not exist."""
    async with http_client(live_server, live_keys["apiKey"]) as client:
        names = await tool_names(client)
    named = {advice.split(" tool")[0] for advice in ROUTE_TOOLS.values()}
    assert named - names == set()


async def test_features_naming_no_group_are_refused_naming_the_groups_there_are(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """A mistyped group would leave the agent with none of its tools and no word why (Supabase's MCP server
    refuses an unknown feature too)."""
    async with http_client(live_server, live_keys["apiKey"], "?features=database,storgae") as client:
        with pytest.raises(MCPError) as refused:
            await client.list_tools()
        called = await client.call_tool("list-buckets", {})
    assert refused.value.error.code == INVALID_PARAMS
    said = refused.value.error.message
    assert said.startswith("?features=: no feature group is named storgae; the groups are "), said
    assert {"database", "storage", "auth"} <= set(said.split("the groups are ")[1].rstrip(".").split(", "))
    assert called.is_error and "no feature group is named storgae" in text_of(called)
