"""`@insforge/sdk`'s `functions.invoke`, unchanged, against a running Kilnbase server; and functions that use
`createClient` to read a table as the calling user, under Row Level Security. Run twice: through the API's
`/functions/<slug>`, and with `functionsUrl` set to the functions host, where the SDK falls back to the API
for a function the host does not serve (one with a secrets allow-list)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from kilnbase.config import Settings
from kilnbase.keys.access_tokens import TokenService
from kilnbase.keys.project_keys import load_project_keys
from tests.support.node import run_node
from tests.support.postgres import TestCluster
from tests.support.servers import ServerProcess, free_port

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
    # Secrets of its own: not on the functions host, so the SDK falls back to /functions/<slug>.
    "own-secrets": """
    export default () => Response.json({ own: Deno.env.get("OWN_SECRET") ?? null });
    """,
}

SCRIPT = r"""
import { createClient } from '@insforge/sdk';
const env = process.env;
const functionsUrl = env.KB_FUNCTIONS_URL || undefined;
const make = (opts) => createClient({ baseUrl: env.KB_URL, anonKey: env.KB_ANON_KEY, functionsUrl, ...opts });
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
r = await anon.functions.invoke('own-secrets', { method: 'GET' });
out.own = { data: r.data, error: e(r) };
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
def host_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def live_server(
    cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory, host_port: int
) -> Iterator[ServerProcess]:
    """The session's kind of live server, with its functions host on a free port."""
    server = ServerProcess(
        tmp_path_factory.mktemp("live") / "data",
        env={
            "DATABASE_URL": cluster.create_database("live"),
            "KILNBASE_FUNCTIONS_HOST_PORT": str(host_port),
        },
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app_env(live_server: ServerProcess, live_keys: dict[str, str]) -> dict[str, str]:
    with psycopg.connect(live_server.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(
            "INSERT INTO notes (owner, body) VALUES (%s, 'alice one'), (%s, 'bob one'), (%s, 'alice two')",
            (ALICE, BOB, ALICE),
        )
    admin = {"Authorization": f"Bearer {live_keys['apiKey']}"}
    secret = httpx.post(
        live_keys["url"] + "/api/secrets", json={"key": "OWN_SECRET", "value": "mine"}, headers=admin
    )
    assert secret.status_code in (200, 201), secret.text
    for slug, code in FUNCTIONS.items():
        fields = {"secrets": ["OWN_SECRET"]} if slug == "own-secrets" else {}
        response = httpx.post(
            live_keys["url"] + "/api/functions",
            json={"name": slug, "slug": slug, "code": code, **fields},
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


@pytest.mark.parametrize("through", ["api", "functions host"])
def test_functions_invoke_and_create_client_under_rls(
    app_env: dict[str, str], host_port: int, through: str
) -> None:
    env = dict(app_env)
    if through == "functions host":
        host = f"http://127.0.0.1:{host_port}"
        _wait_until_hosted(host, [slug for slug in FUNCTIONS if slug != "own-secrets"])
        env["KB_FUNCTIONS_URL"] = host
    out: dict[str, Any] = run_node(SCRIPT, env)
    assert out["post"] == {
        "data": {"method": "POST", "body": {"hello": "world"}, "custom": "yes"},
        "error": None,
    }
    assert out["get"] == {"data": {"method": "GET", "body": None, "custom": None}, "error": None}
    assert out["failed"]["data"] is None
    assert out["failed"]["error"] == {"status": 422, "message": "asked to fail"}
    assert out["missing"]["error"]["status"] == 404
    assert out["own"] == {"data": {"own": "mine"}, "error": None}
    for slug in ("my-notes", "my-notes-esm"):
        assert out[slug]["alice"] == {
            "data": {"notes": ["alice one", "alice two"], "error": None},
            "error": None,
        }
        assert out[slug]["bob"] == {"data": {"notes": ["bob one"], "error": None}, "error": None}
        assert out[slug]["anon"]["data"]["notes"] == []


def _wait_until_hosted(host: str, slugs: list[str]) -> None:
    """The host loads what was deployed within moments of the deploy; the test starts once it has."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if all(httpx.get(f"{host}/{slug}", timeout=10).status_code != 404 for slug in slugs):
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the functions host did not load the functions"
        time.sleep(0.1)
