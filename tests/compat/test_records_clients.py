"""The official clients against a running server: @insforge/sdk's `database` and @supabase/postgrest-js run a
small app's queries (CRUD, filters, embeds, counts, upserts, RPC, RLS with two users and anon).

The SDK test builds the app from empty tables; the others start from the state it ends in (`built_app`), so
each test sets up what it reads and any order will do."""

from __future__ import annotations

import uuid
from typing import Any

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
CREATE TABLE projects (id serial PRIMARY KEY, name text UNIQUE NOT NULL, budget int);
CREATE POLICY projects_read ON projects FOR SELECT TO anon, authenticated USING (true);
CREATE TABLE tasks (
    id serial PRIMARY KEY,
    owner uuid NOT NULL DEFAULT auth.uid(),
    project_id int REFERENCES projects (id),
    title text NOT NULL,
    priority int NOT NULL DEFAULT 1,
    is_public boolean NOT NULL DEFAULT false,
    due date
);
CREATE POLICY tasks_read ON tasks FOR SELECT TO anon, authenticated USING (is_public OR owner = auth.uid());
CREATE POLICY tasks_write ON tasks FOR ALL TO authenticated
    USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
CREATE FUNCTION my_task_count(min_priority int DEFAULT 0) RETURNS bigint LANGUAGE sql STABLE
    AS 'SELECT count(*) FROM tasks WHERE priority >= min_priority';
"""


@pytest.fixture(scope="module")
def app_env(live_server: ServerProcess, live_keys: dict[str, str]) -> dict[str, str]:
    with psycopg.connect(live_server.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(SCHEMA)
    tokens = TokenService(load_project_keys(Settings(data_dir=live_server.data_dir)))
    return {
        "KB_URL": live_keys["url"],
        "KB_API_KEY": live_keys["apiKey"],
        "KB_ANON_KEY": live_keys["anonKey"],
        "KB_ALICE": tokens.sign({"sub": ALICE, "role": "authenticated", "email": "alice@example.com"}),
        "KB_BOB": tokens.sign({"sub": BOB, "role": "authenticated", "email": "bob@example.com"}),
    }


def reset(server: ServerProcess, *seed: str) -> None:
    with psycopg.connect(server.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("TRUNCATE tasks, projects RESTART IDENTITY CASCADE")
        for statement in seed:
            conn.execute(statement, {"alice": ALICE, "bob": BOB})


@pytest.fixture
def empty_app(app_env: dict[str, str], live_server: ServerProcess) -> dict[str, str]:
    reset(live_server)
    return app_env


#: What the SDK test leaves: two projects, and the tasks that survive its updates and deletes.
BUILT_APP = (
    "INSERT INTO projects (name, budget) VALUES ('apollo', 99), ('gemini', 5)",
    "INSERT INTO tasks (owner, project_id, title, priority, is_public) VALUES"
    " (%(alice)s, 1, 'alice one', 3, false), (%(alice)s, NULL, 'alice two', 9, true),"
    " (%(bob)s, NULL, 'bob one', 5, false)",
)


@pytest.fixture
def built_app(app_env: dict[str, str], live_server: ServerProcess) -> dict[str, str]:
    reset(live_server, *BUILT_APP)
    return app_env


INSFORGE_SCRIPT = r"""
import { createClient } from '@insforge/sdk';
const env = process.env;
const make = (opts) => createClient({ baseUrl: env.KB_URL, anonKey: env.KB_ANON_KEY, ...opts });
const admin = createClient({ baseUrl: env.KB_URL, anonKey: env.KB_API_KEY });
const anon = make({});
const alice = make({ accessToken: env.KB_ALICE, isServerMode: true });
const bob = make({ accessToken: env.KB_BOB, isServerMode: true });
const out = {};
const e = (r) => (r.error ? { code: r.error.code, message: r.error.message } : null);

let r = await admin.database.from('projects')
  .insert([{ name: 'apollo', budget: 10 }, { name: 'gemini', budget: 5 }]).select('id,name');
out.adminInsert = { data: r.data, error: e(r) };
const apollo = r.data[0].id;
r = await alice.database.from('tasks').insert([
  { title: 'alice one', project_id: apollo, priority: 3 },
  { title: 'alice two', priority: 1, is_public: true },
  { title: 'alice three', priority: 2, due: '' },
], { defaultToNull: false }).select();
out.aliceInsert = { n: r.data?.length, owner: r.data?.[0]?.owner, due: r.data?.[2]?.due, error: e(r) };
r = await bob.database.from('tasks').insert({ title: 'bob one', priority: 5 });
out.bobInsert = { status: r.status, error: e(r) };
r = await bob.database.from('tasks').insert({ title: 'forged', owner: env.ALICE_ID });
out.forged = { status: r.status, error: e(r) };

r = await alice.database.from('tasks').select('title').order('id');
out.aliceSees = r.data.map((x) => x.title);
r = await bob.database.from('tasks').select('title').order('id');
out.bobSees = r.data.map((x) => x.title);
r = await anon.database.from('tasks').select('title');
out.anonSees = r.data.map((x) => x.title);
r = await anon.database.from('tasks').insert({ title: 'anon' });
out.anonInsert = { status: r.status, code: r.error?.code };

r = await alice.database.from('tasks').select('title', { count: 'exact' })
  .gte('priority', 2).order('priority', { ascending: false });
out.filtered = { titles: r.data.map((x) => x.title), count: r.count };
r = await alice.database.from('tasks').select('title').or('priority.eq.1,title.ilike.*three*').order('id');
out.orFilter = r.data.map((x) => x.title);
r = await alice.database.from('tasks').select('title')
  .in('priority', [1, 3]).like('title', 'alice%').order('id');
out.inFilter = r.data.map((x) => x.title);
r = await alice.database.from('tasks').select('id', { count: 'exact' }).range(0, 1);
out.range = { n: r.data.length, count: r.count, status: r.status };
r = await alice.database.from('tasks').select('*', { count: 'exact', head: true });
out.head = { count: r.count, data: r.data };
r = await alice.database.from('tasks').select('title, project:projects(name)').not('project_id', 'is', null);
out.embed = r.data;
r = await admin.database.from('projects').select('name, tasks(title)').eq('name', 'apollo');
out.reverseEmbed = r.data;
r = await alice.database.from('tasks').select('title').eq('title', 'alice one').single();
out.single = { data: r.data, error: e(r) };
r = await alice.database.from('tasks').select('title').eq('title', 'nothing').maybeSingle();
out.maybeSingle = { data: r.data, error: e(r) };
r = await alice.database.from('tasks').select('title').single();
out.singleMany = { status: r.status, code: r.error?.code };

r = await alice.database.from('tasks').update({ priority: 9 })
  .eq('title', 'alice two').select('title,priority');
out.update = r.data;
r = await bob.database.from('tasks').update({ priority: 0 }).eq('title', 'alice two').select();
out.bobUpdate = r.data;
r = await admin.database.from('projects')
  .upsert({ name: 'apollo', budget: 99 }, { onConflict: 'name' }).select('name,budget');
out.upsert = r.data;
r = await admin.database.from('projects')
  .upsert({ name: 'apollo', budget: 1 }, { onConflict: 'name', ignoreDuplicates: true }).select();
out.upsertIgnore = r.data;
r = await bob.database.from('tasks').delete().eq('title', 'alice one').select();
out.bobDelete = r.data;
r = await alice.database.from('tasks').delete().eq('title', 'alice three').select('title');
out.aliceDelete = r.data;

r = await alice.database.rpc('my_task_count');
out.rpcAlice = r.data;
r = await bob.database.rpc('my_task_count', { min_priority: 2 });
out.rpcBob = r.data;
r = await anon.database.rpc('my_task_count', {}, { get: true });
out.rpcAnonGet = r.data;
r = await admin.database.rpc('no_such_function');
out.rpcMissing = { status: r.status, code: r.error?.code };
r = await admin.database.from('no_such_table').select();
out.missingTable = { status: r.status, code: r.error?.code };
console.log(JSON.stringify(out));
"""


def test_insforge_sdk_database(empty_app: dict[str, str]) -> None:
    out: dict[str, Any] = run_node(INSFORGE_SCRIPT, {**empty_app, "ALICE_ID": ALICE})
    assert out["adminInsert"]["error"] is None
    assert [p["name"] for p in out["adminInsert"]["data"]] == ["apollo", "gemini"]
    assert out["aliceInsert"] == {"n": 3, "owner": ALICE, "due": None, "error": None}
    assert out["bobInsert"] == {"status": 201, "error": None}
    assert out["forged"]["status"] == 403
    assert out["forged"]["error"]["code"] == "42501"
    assert out["aliceSees"] == ["alice one", "alice two", "alice three"]
    assert out["bobSees"] == ["alice two", "bob one"]
    assert out["anonSees"] == ["alice two"]
    assert out["anonInsert"] == {"status": 401, "code": "42501"}
    assert out["filtered"] == {"titles": ["alice one", "alice three"], "count": 2}
    assert out["orFilter"] == ["alice two", "alice three"]
    assert out["inFilter"] == ["alice one", "alice two"]
    assert out["range"] == {"n": 2, "count": 3, "status": 206}
    assert out["head"] == {"count": 3, "data": None}
    assert out["embed"] == [{"title": "alice one", "project": {"name": "apollo"}}]
    assert out["reverseEmbed"] == [{"name": "apollo", "tasks": [{"title": "alice one"}]}]
    assert out["single"] == {"data": {"title": "alice one"}, "error": None}
    assert out["maybeSingle"] == {"data": None, "error": None}
    assert out["singleMany"] == {"status": 406, "code": "PGRST116"}
    assert out["update"] == [{"title": "alice two", "priority": 9}]
    assert out["bobUpdate"] == []
    assert out["upsert"] == [{"name": "apollo", "budget": 99}]
    assert out["upsertIgnore"] == []
    assert out["bobDelete"] == []
    assert out["aliceDelete"] == [{"title": "alice three"}]
    assert out["rpcAlice"] == 2
    assert out["rpcBob"] == 2
    assert out["rpcAnonGet"] == 1
    assert out["rpcMissing"] == {"status": 404, "code": "PGRST202"}
    assert out["missingTable"] == {"status": 404, "code": "PGRST205"}


POSTGREST_SCRIPT = r"""
import { PostgrestClient } from '@supabase/postgrest-js';
const env = process.env;
const client = (token) => new PostgrestClient(env.KB_URL + '/api/database/records', {
  headers: { Authorization: 'Bearer ' + token },
});
const admin = client(env.KB_API_KEY);
const bob = client(env.KB_BOB);
const out = {};
let r = await admin.from('projects').select('name,budget', { count: 'exact' }).order('name');
out.projects = { data: r.data, count: r.count };
r = await admin.from('projects').insert({ name: 'mercury', budget: 1 }, { count: 'exact' });
out.insert = { status: r.status, count: r.count, error: r.error };
r = await admin.from('projects').select('name').textSearch('name', 'mercury');
out.fts = r.data;
r = await admin.from('projects').select('name').filter('budget', 'lt', 50).order('name');
out.filter = r.data;
r = await bob.from('tasks').select('title, projects(name)').eq('priority', 5);
out.bobTasks = r.data;
r = await bob.rpc('my_task_count', { min_priority: 0 });
out.rpc = r.data;
r = await admin.from('projects').select('name').csv();
out.csv = r.data;
r = await bob.from('tasks').select('title').eq('priority', 'high');
out.badValue = { status: r.status, code: r.error?.code };
console.log(JSON.stringify(out));
"""


def test_postgrest_js_against_the_records_base(built_app: dict[str, str]) -> None:
    out: dict[str, Any] = run_node(POSTGREST_SCRIPT, built_app)
    assert set(out) == {"projects", "insert", "fts", "filter", "bobTasks", "rpc", "csv", "badValue"}
    assert out["projects"] == {
        "data": [{"name": "apollo", "budget": 99}, {"name": "gemini", "budget": 5}],
        "count": 2,
    }
    assert out["insert"] == {"status": 201, "count": 1, "error": None}
    assert out["fts"] == [{"name": "mercury"}]
    assert out["filter"] == [{"name": "gemini"}, {"name": "mercury"}]
    assert out["bobTasks"] == [{"title": "bob one", "projects": None}]
    assert out["rpc"] == 2
    header, *names = out["csv"].splitlines()
    assert (header, sorted(names)) == ("name", ["apollo", "gemini", "mercury"])
    assert out["badValue"] == {"status": 400, "code": "22P02"}


def rows_of(data: object) -> list[dict[str, Any]]:
    """The rows a postgrest-py response carries (typed as any JSON by the package)."""
    assert isinstance(data, list) and all(isinstance(row, dict) for row in data), data
    return data


def test_python_postgrest_client(built_app: dict[str, str]) -> None:
    from postgrest import APIError, SyncPostgrestClient
    from postgrest.types import CountMethod

    def client(token: str) -> SyncPostgrestClient:
        return SyncPostgrestClient(
            built_app["KB_URL"] + "/api/database/records", headers={"Authorization": f"Bearer {token}"}
        )

    with client(built_app["KB_API_KEY"]) as admin, client(built_app["KB_BOB"]) as bob:
        new_rows: list[dict[str, Any]] = [{"name": "py-one", "budget": 7}, {"name": "py-two"}]
        inserted = admin.from_("projects").insert(new_rows).execute()
        assert [row["name"] for row in rows_of(inserted.data)] == ["py-one", "py-two"]
        page = (
            admin.from_("projects")
            .select("name,budget", count=CountMethod.exact)
            .like("name", "py-*")
            .order("name", desc=True)
            .limit(1)
            .execute()
        )
        assert page.data == [{"name": "py-two", "budget": None}]
        assert page.count == 2
        updated = admin.from_("projects").update({"budget": 8}).eq("name", "py-two").execute()
        assert [row["budget"] for row in rows_of(updated.data)] == [8]
        upserted = (
            admin.from_("projects").upsert({"name": "py-one", "budget": 70}, on_conflict="name").execute()
        )
        assert [row["budget"] for row in rows_of(upserted.data)] == [70]
        single = admin.from_("projects").select("budget").eq("name", "py-one").single().execute()
        assert single.data == {"budget": 70}
        arguments: dict[str, Any] = {"min_priority": 0}
        assert bob.rpc("my_task_count", arguments).execute().data == 2
        tasks = bob.from_("tasks").select("title,projects(name)").order("id").execute()
        assert [t["title"] for t in rows_of(tasks.data)] == ["alice two", "bob one"]
        deleted = admin.from_("projects").delete().like("name", "py-*").execute()
        assert len(deleted.data) == 2
        with pytest.raises(APIError) as refused:
            bob.from_("tasks").insert({"title": "forged", "owner": ALICE}).execute()
        assert refused.value.code == "42501"


SCHEMA_SCRIPT = r"""
import { createClient, createAdminClient } from '@insforge/sdk';
const env = process.env;
const schema = env.APP_SCHEMA;
const admin = createAdminClient({ baseUrl: env.KB_URL, apiKey: env.KB_API_KEY });
const sql = async (query) => {
  const response = await fetch(env.KB_URL + '/api/database/advance/rawsql', {
    method: 'POST',
    headers: { Authorization: 'Bearer ' + env.KB_API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify({ query }),
  });
  return { status: response.status, body: await response.json() };
};
const out = {};
const created = await sql(`
  CREATE SCHEMA ${schema};
  CREATE TABLE ${schema}.events (id serial PRIMARY KEY, name text NOT NULL);
  CREATE FUNCTION ${schema}.event_count() RETURNS int LANGUAGE sql
    AS 'SELECT count(*)::int FROM ${schema}.events';
  GRANT USAGE ON SCHEMA ${schema} TO authenticated;
  GRANT SELECT ON ${schema}.events TO authenticated;`);
out.created = {
  status: created.status, error: created.body.error ?? null, message: created.body.message ?? null };
let r = await admin.database.schema(schema).from('events')
  .insert([{ name: 'open' }, { name: 'close' }]).select('name');
out.insert = { data: r.data, error: r.error };
r = await admin.database.schema(schema).rpc('event_count');
out.rpc = { data: r.data, error: r.error };
const alice = createClient({
  baseUrl: env.KB_URL, anonKey: env.KB_ANON_KEY, accessToken: env.KB_ALICE, db: { schema } });
r = await alice.database.from('events').select('name').order('id');
out.alice = { data: r.data, error: r.error };
console.log(JSON.stringify(out));
"""


def test_insforge_sdk_reads_a_schema_the_app_created(app_env: dict[str, str]) -> None:
    """InsForge lets raw SQL (as project_admin) create a schema, and serves it to the SDK's
    `database.schema(...)` and `createClient({ db: { schema } })` as soon as it exists."""
    schema = f"app_{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = run_node(SCHEMA_SCRIPT, {**app_env, "APP_SCHEMA": schema})
    assert out["created"] == {"status": 200, "error": None, "message": None}
    assert out["insert"] == {"data": [{"name": "open"}, {"name": "close"}], "error": None}
    assert out["rpc"] == {"data": 2, "error": None}
    assert out["alice"] == {"data": [{"name": "open"}, {"name": "close"}], "error": None}
