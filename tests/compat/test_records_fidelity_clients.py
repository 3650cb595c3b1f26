"""The official clients against a running server on the PostgREST behaviours issue 11 closed: upserts
(201 then 200, a body of only the conflict column), a function whose only parameter has no name, computed
columns and relationships, and CSV as PostgREST writes it; through @supabase/postgrest-js 2.x on the
records base and through @insforge/sdk's `database`.

Each script creates the rows it reads under names of its own, so the two tests run in any order."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support.node import run_node
from tests.support.servers import ServerProcess

SCHEMA = """
CREATE TABLE members (username text PRIMARY KEY, visits int DEFAULT 0);
CREATE TABLE directors (id int PRIMARY KEY, name text);
CREATE TABLE films (id int PRIMARY KEY, title text, director_ref int, first_name text, last_name text);
INSERT INTO directors VALUES (1, 'Agnès Varda');
INSERT INTO films VALUES (1, 'Vagabond', 1, 'Mona', 'Bergeron'), (2, 'Cléo, from 5 to 7', 1, 'Cléo', 'V');
CREATE FUNCTION director(films) RETURNS SETOF directors ROWS 1 LANGUAGE sql STABLE
  AS $$ SELECT * FROM directors WHERE id = $1.director_ref $$;
CREATE FUNCTION films_made(directors) RETURNS SETOF films LANGUAGE sql STABLE
  AS $$ SELECT * FROM films WHERE director_ref = $1.id $$;
CREATE FUNCTION full_name(films) RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT $1.first_name || ' ' || $1.last_name $$;
CREATE FUNCTION echo(json) RETURNS json LANGUAGE sql AS 'SELECT $1';
CREATE FUNCTION echo_jsonb(jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT $1';
"""


@pytest.fixture(scope="module")
def app_env(live_server: ServerProcess, live_keys: dict[str, str]) -> dict[str, str]:
    with psycopg.connect(live_server.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(SCHEMA)
    return {
        "KB_URL": live_keys["url"],
        "KB_API_KEY": live_keys["apiKey"],
        "KB_ANON_KEY": live_keys["anonKey"],
    }


#: The same calls through either client: `db` is a PostgREST client with `from` and `rpc`.
CALLS = r"""
const out = {};
const e = (r) => (r.error ? { code: r.error.code, message: r.error.message } : null);
let r = await db.from('members').upsert({ username: NAME }, { onConflict: 'username' }).select();
out.upsertNew = { status: r.status, data: r.data, error: e(r) };
r = await db.from('members').upsert({ username: NAME }, { onConflict: 'username' }).select();
out.upsertAgain = { status: r.status, data: r.data, error: e(r) };
r = await db.from('members').upsert([{ username: NAME, visits: 3 }, { username: NAME + '-2', visits: 1 }],
  { onConflict: 'username' }).select('username,visits').order('username');
out.upsertMixed = { status: r.status, data: r.data };
r = await db.rpc('echo', { anything: [1, 'two'], nested: { ok: true } });
out.unnamed = { data: r.data, error: e(r) };
r = await db.rpc('echo_jsonb', { '': 5 });
out.emptyName = { data: r.data, error: e(r) };
r = await db.from('films').select('title, director(name)').eq('id', 1);
out.computedRel = { data: r.data, error: e(r) };
r = await db.from('directors').select('name, films_made(title)')
  .order('id', { referencedTable: 'films_made' });
out.computedMany = { data: r.data, error: e(r) };
r = await db.from('films').select('full_name').eq('full_name', 'Mona Bergeron');
out.computedColumn = { data: r.data, error: e(r) };
r = await db.from('films').select('id,title').order('id').csv();
out.csv = { data: r.data, error: e(r) };
console.log(JSON.stringify(out));
"""

POSTGREST_SCRIPT = (
    r"""
import { PostgrestClient } from '@supabase/postgrest-js';
const env = process.env;
const NAME = 'pgjs';
const db = new PostgrestClient(env.KB_URL + '/api/database/records', {
  headers: { Authorization: 'Bearer ' + env.KB_API_KEY },
});
"""
    + CALLS
)

INSFORGE_SCRIPT = (
    r"""
import { createClient } from '@insforge/sdk';
const env = process.env;
const NAME = 'sdk';
const db = createClient({ baseUrl: env.KB_URL, anonKey: env.KB_API_KEY }).database;
"""
    + CALLS
)


def check(out: dict[str, Any], name: str) -> None:
    assert out["upsertNew"] == {"status": 201, "data": [{"username": name, "visits": 0}], "error": None}
    assert out["upsertAgain"] == {"status": 200, "data": [{"username": name, "visits": 0}], "error": None}
    assert out["upsertMixed"] == {
        "status": 201,
        "data": [{"username": name, "visits": 3}, {"username": f"{name}-2", "visits": 1}],
    }
    assert out["unnamed"] == {"data": {"anything": [1, "two"], "nested": {"ok": True}}, "error": None}
    assert out["emptyName"] == {"data": {"": 5}, "error": None}
    assert out["computedRel"] == {
        "data": [{"title": "Vagabond", "director": {"name": "Agnès Varda"}}],
        "error": None,
    }
    assert out["computedMany"] == {
        "data": [
            {"name": "Agnès Varda", "films_made": [{"title": "Vagabond"}, {"title": "Cléo, from 5 to 7"}]}
        ],
        "error": None,
    }
    assert out["computedColumn"] == {"data": [{"full_name": "Mona Bergeron"}], "error": None}
    assert out["csv"] == {"data": 'id,title\n1,Vagabond\n2,"Cléo, from 5 to 7"', "error": None}


def test_postgrest_js(app_env: dict[str, str]) -> None:
    check(run_node(POSTGREST_SCRIPT, app_env), "pgjs")


def test_insforge_sdk(app_env: dict[str, str]) -> None:
    check(run_node(INSFORGE_SCRIPT, app_env), "sdk")
