"""The URL grammar's property tests sent to a server: hostile values are bound parameters, never spliced
into SQL, and no query string is a server error."""

from __future__ import annotations

from urllib.parse import quote

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from starlette.testclient import TestClient

from tests.records.hostile_input import hostile_text, plain_text, postgrest_quote


@pytest.fixture(scope="module")
def canary(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE canary (id serial PRIMARY KEY, value text NOT NULL)")
    return "canary"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plain_text)
def test_hostile_values_are_bound_never_spliced(
    client: TestClient, admin: dict[str, str], canary: str, value: str
) -> None:
    created = client.post(
        f"/api/database/records/{canary}?select=id,value",
        headers={**admin, "Prefer": "return=representation"},
        json={"value": value},
    )
    assert created.status_code == 201, created.text
    row = created.json()[0]
    assert row["value"] == value
    found = client.get(
        f"/api/database/records/{canary}?select=value&id=eq.{row['id']}&value=eq.{quote(value)}",
        headers=admin,
    )
    assert found.status_code == 200, found.text
    assert found.json() == [{"value": value}]
    listed = client.get(
        f"/api/database/records/{canary}?select=id&value=in.({quote(postgrest_quote(value))})", headers=admin
    )
    assert listed.status_code == 200
    assert {"id": row["id"]} in listed.json()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=hostile_text, value=hostile_text, select=hostile_text, order=hostile_text)
def test_hostile_query_strings_are_never_server_errors(
    client: TestClient, admin: dict[str, str], key: str, value: str, select: str, order: str
) -> None:
    query = "&".join(
        f"{quote(k, safe='')}={quote(v, safe='')}"
        for k, v in [(key or "x", value), ("select", select), ("order", order)]
    )
    response = client.get(f"/api/database/records/posts?{query}", headers=admin)
    assert response.status_code < 500, (query, response.text)
    if response.status_code >= 300:
        assert set(response.json()) == {"code", "message", "details", "hint"}
    count = client.get("/api/database/records/posts?select=id", headers={**admin, "Prefer": "count=exact"})
    assert count.headers["content-range"].endswith("/4")


@pytest.mark.parametrize(
    "query",
    [
        "select=" + "a(" * 3000 + ")" * 3000,
        "or=(" + "and(" * 3000 + "id.eq.1" + ")" * 3001,
    ],
)
def test_deep_nesting_is_refused_not_a_crash(client: TestClient, admin: dict[str, str], query: str) -> None:
    response = client.get(f"/api/database/records/posts?{query}", headers=admin)
    assert response.status_code == 400
    assert response.json()["code"] == "PGRST100"
