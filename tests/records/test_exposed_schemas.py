"""The records API exposes the project's schemas and none of Kilnbase's own (issue 10, item 4): a schema that
Kilnbase's migrations create is neither reachable (406 PGRST106) nor named in any PGRST106 hint."""

from __future__ import annotations

import psycopg
import pytest
from httpx2 import Response
from starlette.testclient import TestClient

RECORDS = "/api/database/records"
RPC = "/api/database/rpc"
EXPOSED_HINT = "Only the following schemas are exposed: public"


@pytest.fixture(scope="module")
def kilnbase_schemas(database_url: str) -> list[str]:
    """Every schema of the migrated database but `public` (the records fixture creates none)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
            "AND nspname NOT IN ('information_schema', 'public') ORDER BY nspname"
        ).fetchall()
    schemas = [name for (name,) in rows]
    assert {"ai", "auth", "system"} <= set(schemas)
    return schemas


def assert_invalid_schema(response: Response, schema: str) -> None:
    body = response.json()
    assert response.status_code == 406, body
    assert body["code"] == "PGRST106"
    assert body["message"] == f"Invalid schema: {schema}"
    assert body["hint"] == EXPOSED_HINT


def test_the_ai_schema_is_not_reachable(client: TestClient, admin: dict[str, str]) -> None:
    response = client.get(f"{RECORDS}/providers", headers={**admin, "Accept-Profile": "ai"})
    assert_invalid_schema(response, "ai")


def test_no_schema_of_kilnbase_is_reachable_or_advertised(
    client: TestClient, admin: dict[str, str], kilnbase_schemas: list[str]
) -> None:
    for schema in kilnbase_schemas:
        read = client.get(f"{RECORDS}/anything", headers={**admin, "Accept-Profile": schema})
        assert_invalid_schema(read, schema)
        query = client.get(f"{RECORDS}/anything?schema={schema}", headers=admin)
        assert_invalid_schema(query, schema)
        write = client.post(
            f"{RECORDS}/anything", headers={**admin, "Content-Profile": schema}, json={"id": 1}
        )
        assert_invalid_schema(write, schema)
        call = client.post(f"{RPC}/anything", headers={**admin, "Content-Profile": schema}, json={})
        assert_invalid_schema(call, schema)
    public = client.get(f"{RECORDS}/posts?select=id&id=eq.1", headers={**admin, "Accept-Profile": "public"})
    assert public.json() == [{"id": 1}]
