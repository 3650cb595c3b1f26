"""End to end: an agent builds a todo app's backend through Kilnbase's MCP server alone, with an agent key
the admin made, and its one destructive step waits for the admin's approval; then the app works for its
users through the unchanged `@insforge/sdk`."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult, TextContent

from tests.mcp_server.test_mcp_server import agent_key, call, http_client
from tests.support.node import ensure_npm_clients, run_node
from tests.support.servers import ServerProcess

#: `compat`: it drives the official npm clients, as `tests/compat/` does.
pytestmark = [pytest.mark.anyio, pytest.mark.compat]

#: The app's one function, in InsForge's self-hosted form: `createClient()` acts as the caller, under RLS.
SUMMARY = """
module.exports = async function (req) {
  const client = createClient();
  const { data, error } = await client.database.from("TABLE").select("title,done").order("title");
  const rows = data ?? [];
  return Response.json({
    open: rows.filter((t) => !t.done).map((t) => t.title),
    done: rows.filter((t) => t.done).length,
    error: error?.message ?? null,
  });
};
"""

OWNER_POLICIES = """
alter table todos alter column user_id set default auth.uid();
create policy todos_select_own on todos for select to authenticated using (user_id = auth.uid());
create policy todos_insert_own on todos for insert to authenticated with check (user_id = auth.uid());
create policy todos_update_own on todos for update to authenticated
  using (user_id = auth.uid()) with check (user_id = auth.uid());
create policy todos_delete_own on todos for delete to authenticated using (user_id = auth.uid());
"""

#: Each user hears of their own new todos on `<prefix>:<their id>`, and only they may subscribe to it.
REALTIME = """
create policy todos_subscribe_own on realtime.channels for select to authenticated
  using (pattern = 'PREFIX:%' and realtime.channel_name() = 'PREFIX:' || auth.uid());
create function todos_announce() returns trigger language plpgsql as $$
begin
  perform realtime.publish('PREFIX:' || new.user_id, 'todo_added', jsonb_build_object('title', new.title));
  return new;
end $$;
create trigger todos_announce after insert on todos for each row execute function todos_announce();
"""

#: What two users do with the app, each through their own `@insforge/sdk` client.
APP = r"""
import { createClient } from '@insforge/sdk';
const env = process.env;
const base = { baseUrl: env.KB_URL, anonKey: env.KB_ANON_KEY };
const e = (r) => (r.error ? { status: r.error.statusCode, message: r.error.message } : null);
async function signUp(email) {
  const r = await createClient({ ...base, isServerMode: true }).auth.signUp(
    { email, password: 'correct horse 1' });
  if (r.error) throw new Error(r.error.message);
  return { id: r.data.user.id, client: createClient({ ...base, accessToken: r.data.accessToken }) };
}
const out = {};
const alice = await signUp(env.ALICE_EMAIL);
const bob = await signUp(env.BOB_EMAIL);
const todos = (c) => c.database.from(env.TABLE);
let heard = null;
if (env.CHANNEL_PREFIX) {
  const channel = `${env.CHANNEL_PREFIX}:${alice.id}`;
  out.aliceSubscribes = (await alice.client.realtime.subscribe(channel)).ok;
  out.bobSubscribesToAlices = (await bob.client.realtime.subscribe(channel)).error?.code ?? 'subscribed';
  heard = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no todo_added within 10 s')), 10000);
    const titles = [];
    alice.client.realtime.on('todo_added', (message) => {
      titles.push(message.title);
      if (titles.length === 2) { clearTimeout(timer); resolve(titles.sort()); }
    });
  });
}

let r = await todos(alice.client)
  .insert([{ title: 'buy milk', done: false }, { title: 'call mum', done: true }])
  .select('title,done,user_id');
out.aliceInsert = { data: r.data, error: e(r) };
r = await todos(bob.client).insert({ title: 'fix bike' }).select('title');
out.bobInsert = { data: r.data, error: e(r) };
r = await todos(bob.client).insert({ title: 'forged', user_id: alice.id });
out.forged = { status: r.status, message: r.error?.message ?? null };
r = await todos(alice.client).select('title,done').order('title');
out.aliceReads = { data: r.data, error: e(r) };
r = await todos(bob.client).select('title').order('title');
out.bobReads = { data: r.data, error: e(r) };
r = await todos(bob.client).update({ done: true }).eq('title', 'buy milk').select('title');
out.bobUpdatesAlices = { data: r.data, error: e(r) };
r = await todos(createClient(base)).select('title');
out.anonReads = { data: r.data, error: e(r) };

const files = alice.client.storage.from(env.BUCKET);
r = await files.upload('milk/receipt.txt', new Blob(['2 litres'], { type: 'text/plain' }));
out.upload = r.error ? e(r) : { key: r.data.key, size: r.data.size };
r = await files.download('milk/receipt.txt');
out.download = r.error ? e(r) : await r.data.text();

r = await alice.client.functions.invoke(env.FUNCTION, { method: 'GET' });
out.aliceSummary = { data: r.data, error: e(r) };
r = await bob.client.functions.invoke(env.FUNCTION, { method: 'GET' });
out.bobSummary = { data: r.data, error: e(r) };
out.ids = { alice: alice.id, bob: bob.id };
if (heard) {
  out.aliceHeard = await heard;
  for (const user of [alice, bob]) user.client.realtime.disconnect();
}
console.log(JSON.stringify(out));
"""


def admin(server: ServerProcess, keys: dict[str, str], method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(
        method,
        f"{server.url}{path}",
        headers={"Authorization": f"Bearer {keys['apiKey']}"},
        timeout=30,
        **kwargs,
    )
    assert response.is_success, response.text
    return response.json()


def owner_policies(table: str) -> str:
    return OWNER_POLICIES.replace("todos", table)


def summary_function(table: str) -> str:
    return SUMMARY.replace("TABLE", table)


def check_the_app(
    keys: dict[str, str], table: str, bucket: str, function: str, channel_prefix: str = ""
) -> None:
    """What two new users see of the app through `@insforge/sdk`: their own todos only, a file they
    upload, and the function's summary of their own todos."""
    out = run_node(
        APP,
        {
            "KB_URL": keys["url"],
            "KB_ANON_KEY": keys["anonKey"],
            "ALICE_EMAIL": f"alice-{secrets.token_hex(4)}@example.com",
            "BOB_EMAIL": f"bob-{secrets.token_hex(4)}@example.com",
            "BUCKET": bucket,
            "FUNCTION": function,
            "TABLE": table,
            "CHANNEL_PREFIX": channel_prefix,
        },
    )
    alice = out["ids"]["alice"]
    assert out["aliceInsert"] == {
        "data": [
            {"title": "buy milk", "done": False, "user_id": alice},
            {"title": "call mum", "done": True, "user_id": alice},
        ],
        "error": None,
    }
    assert out["bobInsert"] == {"data": [{"title": "fix bike"}], "error": None}
    assert out["forged"]["status"] in (401, 403), out["forged"]
    assert "row-level security" in out["forged"]["message"]
    assert out["aliceReads"] == {
        "data": [{"title": "buy milk", "done": False}, {"title": "call mum", "done": True}],
        "error": None,
    }
    assert out["bobReads"] == {"data": [{"title": "fix bike"}], "error": None}
    assert out["bobUpdatesAlices"] == {"data": [], "error": None}
    assert out["anonReads"] == {"data": [], "error": None}
    assert out["upload"] == {"key": "milk/receipt.txt", "size": 8}
    assert out["download"] == "2 litres"
    assert out["aliceSummary"] == {"data": {"open": ["buy milk"], "done": 1, "error": None}, "error": None}
    assert out["bobSummary"] == {"data": {"open": ["fix bike"], "done": 0, "error": None}, "error": None}
    if channel_prefix:
        assert out["aliceSubscribes"] is True
        assert out["bobSubscribesToAlices"] == "REALTIME_UNAUTHORIZED"
        assert out["aliceHeard"] == ["buy milk", "call mum"]  # her own two, not Bob's


async def test_an_agent_builds_a_todo_app_that_works_through_the_sdk(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    bucket = f"todo-files-{secrets.token_hex(3)}"
    function = f"todo-summary-{secrets.token_hex(3)}"
    channel_prefix = f"todos{secrets.token_hex(3)}"
    scratch = f"todos_scratch_{secrets.token_hex(3)}"
    session = f"e2e-{uuid.uuid4().hex[:8]}"
    agent = agent_key(live_server, live_keys["apiKey"], ["*:write"])

    async with http_client(live_server, agent, session=session) as mcp:
        # The agent reads the backend first, then names what it read on its first write.
        metadata = await call(mcp, "get-backend-metadata", {})
        table = await call(
            mcp,
            "create-table",
            {
                "tableName": "todos",
                "columns": [
                    {"columnName": "title", "type": "string", "isNullable": False},
                    {"columnName": "done", "type": "boolean", "isNullable": False, "defaultValue": "false"},
                    {"columnName": "user_id", "type": "uuid", "isNullable": False},
                ],
                "expectedSchemaVersion": metadata["schemaFingerprint"],
            },
        )
        assert table["tableName"] == "todos"
        checked = await call(mcp, "dry-run-migration", {"sql": OWNER_POLICIES})
        assert checked["valid"] is True and checked["riskLevel"] != "DANGER", checked
        await call(
            mcp,
            "apply-migration",
            {"version": "20261205000001", "name": "todos-owner-policies", "sql": OWNER_POLICIES},
        )
        policies = await call(mcp, "list-database-objects", {"kind": "policies"})
        assert {p["policyName"] for p in policies["policies"] if p["tableName"] == "todos"} >= {
            "todos_select_own",
            "todos_insert_own",
            "todos_update_own",
            "todos_delete_own",
        }

        await call(mcp, "create-bucket", {"bucketName": bucket, "isPublic": False})
        deployed = await call(mcp, "create-function", {"name": function, "code": summary_function("todos")})
        assert deployed["function"]["slug"] == function
        ai = await call(
            mcp,
            "create-ai-configuration",
            {"modelId": "openai/gpt-4o-mini", "systemPrompt": "Suggest the next todo in five words."},
        )
        channel = await call(
            mcp, "create-channel", {"pattern": f"{channel_prefix}:%", "description": "todo changes"}
        )
        published = await call(
            mcp,
            "publish-message",
            {"channel": f"{channel_prefix}:all", "event": "todo_added", "payload": {"title": "hello"}},
        )
        assert published["event"] == "todo_added"
        # Migrations may not touch the realtime schema, so its subscribe policy goes through SQL.
        await call(mcp, "run-raw-sql", {"query": REALTIME.replace("PREFIX", channel_prefix)})

        # A scratch table the agent made and no longer wants: dropping it waits for a person.
        await call(
            mcp, "create-table", {"tableName": scratch, "columns": [{"columnName": "note", "type": "string"}]}
        )
        held = await call(mcp, "delete-table", {"tableName": scratch})
        assert held["status"] == "pending_approval"
        assert scratch in await call(mcp, "list-tables", {})
        waiting = await call(mcp, "get-change-request", {"changeRequestId": held["changeRequestId"]})
        assert waiting["status"] == "pending"

        approved = admin(
            live_server, live_keys, "POST", f"/api/approvals/{held['changeRequestId']}/approve", json={}
        )
        assert approved["status"] == "done"
        polled = await call(mcp, "get-change-request", {"changeRequestId": held["changeRequestId"]})
        tables = await call(mcp, "list-tables", {})
    assert polled["status"] == "done"
    assert scratch not in tables and "todos" in tables

    # What the admin sees of the agent's work.
    assert bucket in [b["name"] for b in admin(live_server, live_keys, "GET", "/api/storage/buckets")]
    assert ai["id"] in [c["id"] for c in admin(live_server, live_keys, "GET", "/api/ai/configurations")]
    assert channel["id"] in [c["id"] for c in admin(live_server, live_keys, "GET", "/api/realtime/channels")]
    audits = admin(
        live_server, live_keys, "GET", "/api/logs/audits", params={"action": "TOOL_CALL", "limit": 1000}
    )
    session_calls = [a for a in audits if a["details"].get("session") == session]
    [actor] = {a["actor"] for a in session_calls}  # one agent did all of it, under its own name
    assert actor.startswith("agent:")
    tools = {a["details"]["tool"] for a in session_calls}
    assert {"create-table", "apply-migration", "create-bucket", "create-function", "create-channel"} <= tools
    # The approved drop ran once, recorded in the agent's own session (so a replay of it includes it).
    [drop] = [
        a for a in session_calls if a["details"]["tool"] == "delete-table" and scratch in str(a["details"])
    ]
    assert drop["outcome"] == "success"

    check_the_app(live_keys, "todos", bucket, function, channel_prefix)


async def official(session: ClientSession, tool: str, arguments: dict[str, Any]) -> str:
    """Call one of `@insforge/mcp`'s tools; its answer's text (it answers in prose and JSON)."""
    result = await session.call_tool(tool, arguments, read_timeout_seconds=60)
    assert isinstance(result, CallToolResult)
    text = "\n".join(part.text for part in result.content if isinstance(part, TextContent))
    assert not result.is_error, f"{tool}: {text}"
    return text


async def test_the_same_app_through_the_official_insforge_mcp(
    live_server: ServerProcess, live_keys: dict[str, str], tmp_path: Path
) -> None:
    """The parts of the transcript `@insforge/mcp`'s tools allow, with the agent key as its `API_KEY`: the
    table and its policies (as SQL), the bucket and the function. It has no AI configuration or realtime
    tools, and no drop-table tool (Kilnbase holds agents' drops for approval on `/mcp` only)."""
    table = f"todos_{secrets.token_hex(3)}"
    bucket = f"todo-files-{secrets.token_hex(3)}"
    function = f"todo-summary-{secrets.token_hex(3)}"
    code = tmp_path / "summary.js"
    code.write_text(summary_function(table))
    agent = agent_key(live_server, live_keys["apiKey"], ["*:write"])
    entry = ensure_npm_clients() / "node_modules" / "@insforge" / "mcp" / "dist" / "index.js"
    server = StdioServerParameters(
        command="node",
        args=[str(entry)],
        env={
            "API_KEY": agent,
            "API_BASE_URL": live_keys["url"],
            "PATH": "/usr/bin:/bin",
            "TMPDIR": str(tmp_path),
        },
    )
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await official(
            session,
            "run-raw-sql",
            {
                "query": f"create table {table} (id uuid primary key default gen_random_uuid(), "
                "title text not null, done boolean not null default false, user_id uuid not null)",
                "params": [],
            },
        )
        await official(session, "run-raw-sql", {"query": owner_policies(table), "params": []})
        await official(session, "create-bucket", {"bucketName": bucket, "isPublic": False})
        await official(
            session, "create-function", {"name": function, "slug": function, "codeFile": str(code)}
        )
        metadata = await official(session, "get-backend-metadata", {})
        buckets = await official(session, "list-buckets", {})
    assert f"### {table}" in metadata
    assert bucket in buckets
    check_the_app(live_keys, table, bucket, function)
