"""`@insforge/sdk`'s `functions.invoke`, unchanged, against a running Kilnbase server; and functions that use
`createClient` to read a table as the calling user, under Row Level Security."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest

from kilnbase.config import Settings
from kilnbase.keys.access_tokens import TokenService
from kilnbase.keys.project_keys import load_project_keys
from tests.support.node import run_node
from tests.support.servers import ServerProcess

ALICE = str(uuid.uuid4())
BOB = str(uuid.uuid4())

SCHEMA = """
CREATE TABLE notes (id serial PRIMARY KEY, owner uuid NOT NULL, body text NOT NULL);
CREATE POLICY notes_own ON notes FOR SELECT TO authenticated USING (owner = auth.uid());
GRANT SELECT ON notes TO authenticated;
"""

FUNCTIONS = {
    "echo": """
    export default async function (req: Request): Promise<Response> {
      const body = req.method === "GET" ? null : await req.json();
      if (body?.fail) {
        return Response.json({ error: "BAD", message: "asked to fail", statusCode: 422 }, { status: 422 });
      }
      return Response.json({ method: req.method, body, custom: req.headers.get("x-custom") });
    }
    """,
    # InsForge's self-hosted form with its injected, preconfigured `createClient`.
    "my-notes": """
    module.exports = async function (req) {
      const client = createClient();
      const { data, error } = await client.database.from("notes").select("body").order("id");
      return Response.json({ notes: (data ?? []).map((n) => n.body), error: error?.message ?? null });
    };
    """,
    # InsForge's documented cloud form: the SDK imported, configured from the environment and the caller.
    "my-notes-esm": """
    import { createClient } from "npm:@insforge/sdk@1.5.2";
    export default async function (req: Request): Promise<Response> {
      const token = req.headers.get("Authorization")?.replace("Bearer ", "");
      const client = createClient({
        baseUrl: Deno.env.get("INSFORGE_BASE_URL"),
        anonKey: Deno.env.get("ANON_KEY"),
        edgeFunctionToken: token,
      });
      const { data, error } = await client.database.from("notes").select("body").order("id");
      const notes = (data ?? []).map((n: { body: string }) => n.body);
      return Response.json({ notes, error: error?.message ?? null });
    }
    """,
}

SCRIPT = r"""
import { createClient } from '@insforge/sdk';
const env = process.env;
const make = (opts) => createClient({ baseUrl: env.KB_URL, anonKey: env.KB_ANON_KEY, ...opts });
const anon = make({});
const alice = make({ accessToken: env.KB_ALICE, isServerMode: true });
const bob = make({ accessToken: env.KB_BOB, isServerMode: true });
const out = {};
const e = (r) => (r.error ? { status: r.error.statusCode, message: r.error.message } : null);

let r = await anon.functions.invoke('echo', { body: { hello: 'world' }, headers: { 'x-custom': 'yes' } });
out.post = { data: r.data, error: e(r) };
r = await anon.functions.invoke('echo', { method: 'GET' });
out.get = { data: r.data, error: e(r) };
r = await anon.functions.invoke('echo', { body: { fail: true } });
out.failed = { data: r.data, error: e(r) };
r = await anon.functions.invoke('no-such-function');
out.missing = { data: r.data, error: e(r) };
for (const slug of ['my-notes', 'my-notes-esm']) {
  out[slug] = {};
  for (const [who, client] of [['alice', alice], ['bob', bob], ['anon', anon]]) {
    r = await client.functions.invoke(slug, { method: 'GET' });
    out[slug][who] = { data: r.data, error: e(r) };
  }
}
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def app_env(live_server: ServerProcess, live_keys: dict[str, str]) -> dict[str, str]:
    with psycopg.connect(live_server.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(
            "INSERT INTO notes (owner, body) VALUES (%s, 'alice one'), (%s, 'bob one'), (%s, 'alice two')",
            (ALICE, BOB, ALICE),
        )
    admin = {"Authorization": f"Bearer {live_keys['apiKey']}"}
    for slug, code in FUNCTIONS.items():
        response = httpx.post(
            live_keys["url"] + "/api/functions",
            json={"name": slug, "slug": slug, "code": code},
            headers=admin,
            timeout=120,
        )
        assert response.status_code == 201, response.text
    tokens = TokenService(load_project_keys(Settings(data_dir=live_server.data_dir)))
    return {
        "KB_URL": live_keys["url"],
        "KB_ANON_KEY": live_keys["anonKey"],
        "KB_ALICE": tokens.sign({"sub": ALICE, "role": "authenticated", "email": "alice@example.com"}),
        "KB_BOB": tokens.sign({"sub": BOB, "role": "authenticated", "email": "bob@example.com"}),
    }


def test_functions_invoke_and_create_client_under_rls(app_env: dict[str, str]) -> None:
    out: dict[str, Any] = run_node(SCRIPT, app_env)
    assert out["post"] == {
        "data": {"method": "POST", "body": {"hello": "world"}, "custom": "yes"},
        "error": None,
    }
    assert out["get"] == {"data": {"method": "GET", "body": None, "custom": None}, "error": None}
    assert out["failed"]["data"] is None
    assert out["failed"]["error"] == {"status": 422, "message": "asked to fail"}
    assert out["missing"]["error"]["status"] == 404
    for slug in ("my-notes", "my-notes-esm"):
        assert out[slug]["alice"] == {
            "data": {"notes": ["alice one", "alice two"], "error": None},
            "error": None,
        }
        assert out[slug]["bob"] == {"data": {"notes": ["bob one"], "error": None}, "error": None}
        assert out[slug]["anon"]["data"]["notes"] == []
