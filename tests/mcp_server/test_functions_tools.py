"""Function tools through `/mcp` on a real `kilnbase serve` with real Deno: deploy, invoke, read logs,
change and delete a function."""

from __future__ import annotations

import secrets

import pytest

from tests.mcp_server.test_approvals import admin_api
from tests.mcp_server.test_mcp_server import agent_key, call, error_of, http_client, tool_names
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.anyio

ECHO = (
    "export default async function (req: Request): Promise<Response> { const u = new URL(req.url); "
    "return Response.json({method: req.method, path: u.pathname, q: u.searchParams.get('q'), "
    "h: req.headers.get('x-test'), body: await req.text()}); }"
)
HELLO = "export default async function (): Promise<Response> { return new Response('v2 ' + 'x'.repeat(3)); }"


async def test_a_function_deployed_invoked_changed_and_deleted_through_tools(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    slug = f"mcp-{secrets.token_hex(4)}"
    async with http_client(live_server, live_keys["apiKey"]) as client:
        names = await tool_names(client)
        created = await call(client, "create-function", {"name": slug, "code": ECHO})
        listed = await call(client, "list-functions", {})
        echoed = await call(
            client,
            "invoke-function",
            {
                "slug": slug,
                "method": "POST",
                "path": "/items?q=7",
                "body": {"a": 1},
                "headers": {"x-test": "yes"},
            },
        )
        logs = await call(client, "get-function-logs", {"slug": slug})
        await call(client, "update-function", {"slug": slug, "code": HELLO})
        fetched = await call(client, "get-function", {"slug": slug})
        second = await call(client, "invoke-function", {"slug": slug, "method": "GET"})
        await call(client, "delete-function", {"slug": slug})
        gone = await client.call_tool("invoke-function", {"slug": slug})
        missing = await client.call_tool("get-function", {"slug": slug})
    assert {"list-functions", "invoke-function", "get-function-logs", "delete-function"} <= names
    assert created["function"]["slug"] == slug
    assert slug in [f["slug"] for f in listed["functions"]]
    assert echoed["status"] == 200
    assert echoed["body"] == {
        "method": "POST",
        "path": f"/{slug}/items",
        "q": "7",
        "h": "yes",
        "body": '{"a":1}',
    }
    assert any(line["status"] == 200 and "POST" in line["message"] for line in logs["logs"])
    assert fetched["code"] == HELLO
    assert second["body"] == "v2 xxx"
    # No function: the tool's error, not a result that reads as the function's own 404.
    assert error_of(gone)["error"] == "FUNCTION_NOT_FOUND"
    assert error_of(missing)["statusCode"] == 404


async def test_bad_code_is_refused_and_an_agents_delete_waits(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    slug = f"mcp-{secrets.token_hex(4)}"
    agent = agent_key(live_server, live_keys["apiKey"], ["functions:write"])
    async with http_client(live_server, agent) as client:
        # (`secrets: []`: a key without secrets:read deploys only functions that see no secret.)
        broken = await client.call_tool(
            "create-function", {"name": slug, "code": "export default async function ( {", "secrets": []}
        )
        await call(client, "create-function", {"name": slug, "code": HELLO, "secrets": []})
        held = await call(client, "delete-function", {"slug": slug})
        still = await call(client, "get-function", {"slug": slug})
    assert error_of(broken)["statusCode"] == 400
    assert held["status"] == "pending_approval"
    assert still["slug"] == slug
    rejected = admin_api(
        live_server, live_keys, "POST", f"/api/approvals/{held['changeRequestId']}/reject", json={}
    )
    assert rejected.status_code == 200, rejected.text


async def test_the_anon_key_sees_no_function_tool(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    async with http_client(live_server, live_keys["anonKey"]) as client:
        names = await tool_names(client)
        refused = await client.call_tool("invoke-function", {"slug": "anything"})
    assert not ({"list-functions", "invoke-function", "create-function"} & names)
    assert refused.is_error


async def test_functions_invoke_reaches_invoke_function_and_nothing_more(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """`functions:invoke` offers `invoke-function` (any method) as it reaches `/functions/:slug` on REST, and
    no tool that manages functions; `*:read` keeps not offering it, as before the scope existed."""
    slug = f"mcp-{secrets.token_hex(4)}"
    async with http_client(live_server, live_keys["apiKey"]) as client:
        await call(client, "create-function", {"name": slug, "code": ECHO})
    invoker = agent_key(live_server, live_keys["apiKey"], ["functions:invoke"])
    async with http_client(live_server, invoker) as client:
        names = await tool_names(client)
        echoed = await call(client, "invoke-function", {"slug": slug, "method": "POST", "body": "hi"})
        refused = await client.call_tool("update-function", {"slug": slug, "code": HELLO})
    assert names == {"invoke-function", "get-change-request", "list-change-requests"}
    assert echoed["status"] == 200 and echoed["body"]["method"] == "POST" and echoed["body"]["body"] == "hi"
    assert refused.is_error
    reader = agent_key(live_server, live_keys["apiKey"], ["*:read"])
    async with http_client(live_server, reader) as client:
        names = await tool_names(client)
        hidden = await client.call_tool("invoke-function", {"slug": slug, "method": "POST"})
    assert "invoke-function" not in names and "list-functions" in names
    assert hidden.is_error
