"""The owner's sessions never run a function the app created in `public`.

project_admin (the API key's raw SQL, or an agent key with `database:write`) may create functions in
`public`. One whose argument types match a call exactly wins over the built-in that needs a cast or takes a
polymorphic argument, wherever `public` is on the search path: `public.make_interval(secs integer)` over
`pg_catalog.make_interval`, `public.unnest(name[])` over `pg_catalog.unnest(anyarray)`. Kilnbase's own
statements (the key-value store's admin writes, the policy simulator's catalog reads, a sign-up's session)
ran such functions with the owner's rights, a superuser's in the embedded cluster; the owner's sessions now
resolve in pg_catalog alone. The planted functions record who ran them, and are dropped afterwards."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers, agent_headers

PLANTED = """
create table public.{spy} (via text, who text);
grant all on public.{spy} to public;
create function public.make_interval(secs integer) returns interval language sql as $f$
  insert into public.{spy} values ('make_interval', current_user::text);
  select pg_catalog.make_interval(secs => secs::float8);
$f$;
create function public.unnest(a name[]) returns setof name language sql as $f$
  insert into public.{spy} values ('unnest', current_user::text);
  select x from pg_catalog.unnest(a) as x;
$f$;
"""


@pytest.fixture
def spy(client: TestClient, database_url: str) -> Iterator[str]:
    """The table the planted functions write to; planted by an agent key with only `database:write`."""
    admin = admin_headers(client)
    agent = agent_headers(client, admin, ["database:write"])
    name = f"spy_{secrets.token_hex(4)}"
    planted = client.post(
        "/api/database/advance/rawsql", headers=agent, json={"query": PLANTED.format(spy=name)}
    )
    assert planted.status_code == 200, planted.text
    try:
        yield name
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("drop function public.make_interval(integer)")
            conn.execute("drop function public.unnest(name[])")
            conn.execute(f"drop table public.{name}")


def test_kilnbase_never_runs_a_planted_function_as_the_owner(
    client: TestClient, database_url: str, spy: str
) -> None:
    admin = admin_headers(client)
    kv = client.put(
        f"/api/kv/entries/ns-{secrets.token_hex(3)}/k", headers=admin, json={"value": 1, "ttl": 60}
    )
    assert kv.status_code == 200, kv.text
    table = f"t_{secrets.token_hex(4)}"
    made = client.post(
        "/api/database/advance/rawsql", headers=admin, json={"query": f"create table public.{table} (id int)"}
    )
    assert made.status_code == 200, made.text
    simulated = client.post(
        "/api/database/policies/simulate",
        headers=admin,
        json={"table": table, "operation": "SELECT", "role": "anon"},
    )
    assert simulated.status_code == 200, simulated.text
    email = f"u{secrets.token_hex(4)}@example.com"
    signed_up = client.post("/api/auth/users", json={"email": email, "password": "Sup3r-secret-pw!"})
    assert signed_up.status_code == 200, signed_up.text
    with psycopg.connect(database_url) as conn:
        ran = conn.execute(f"select via, who from public.{spy}").fetchall()
        owner = conn.execute("select current_user").fetchone()
    assert owner is not None
    assert all(who != owner[0] for _, who in ran), f"the app's function ran as the owner: {ran}"
