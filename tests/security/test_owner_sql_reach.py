"""Owner-level SQL needs `database:owner-sql` by name: a key without it is refused at once, even for SQL
that would otherwise wait for a person, rather than turned into a change request that a person might approve
and that could only fail (the approval runs the call as the key, whose scopes still lack it)."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests.security.conftest import KEPT, OwnerSql, table_notes
from tests.support.app import agent_headers

OWNER_SQL = "/api/database/advance/rawsql/unrestricted"


def test_a_key_without_owner_sql_is_refused_not_held(
    client: TestClient, admin: dict[str, str], owner_sql: OwnerSql, three_rows: str
) -> None:
    writer = agent_headers(client, admin, ["*:write"], "no-owner")
    pending_before = client.get("/api/approvals?status=pending&limit=200", headers=admin).json()
    refused = client.post(OWNER_SQL, headers=writer, json={"query": f"delete from public.{three_rows}"})
    assert refused.status_code == 403, refused.text
    body = refused.json()
    assert body["error"] == "FORBIDDEN" and "database:owner-sql" in body["message"], body
    assert "database:owner-sql" in body["nextActions"]
    pending_after = client.get("/api/approvals?status=pending&limit=200", headers=admin).json()
    assert len(pending_after) == len(pending_before)  # no change request was made
    assert table_notes(owner_sql, three_rows) == KEPT
