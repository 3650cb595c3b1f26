"""An execution plan with `analyze` runs the statement it explains: for an agent key's write, that would be
the write without the checks its writes pass (no unfiltered PATCH or DELETE, no filter matching every row).
With `KILNBASE_DB_PLAN_ENABLED` on, an agent's write is explained with `analyze` only when its transaction
rolls back; people keep PostgREST's behaviour."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from kilnbase.config import RecordsSettings, Settings
from tests.security.conftest import KEPT, OwnerSql, assert_forbidden, table_notes
from tests.support.app import agent_headers

ANALYZE = "application/vnd.pgrst.plan+json; options=analyze"


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        records=RecordsSettings(plan_enabled=True, tx_end="commit-allow-override"),
    )


@pytest.mark.parametrize(
    ("method", "query", "body"),
    [
        ("DELETE", "", None),
        ("DELETE", "id=not.is.null", None),
        ("PATCH", "", {"note": "gone"}),
        ("PATCH", "id=gte.0", {"note": "gone"}),
        ("DELETE", "id=eq.1", None),
        ("POST", "", {"id": 4, "note": "new"}),
    ],
    ids=["delete-all", "delete-always-true", "patch-all", "patch-always-true", "delete-one", "insert"],
)
def test_an_agents_write_is_not_run_through_its_plan(
    client: TestClient,
    admin: dict[str, str],
    three_rows: str,
    owner_sql: OwnerSql,
    method: str,
    query: str,
    body: dict[str, object] | None,
) -> None:
    agent = agent_headers(client, admin, ["records:write"], "explainer")
    url = f"/api/database/records/{three_rows}?{query}"
    refused = client.request(method, url, headers={**agent, "Accept": ANALYZE}, json=body)
    assert_forbidden(refused, "options=analyze", "tx=rollback")
    assert table_notes(owner_sql, three_rows) == KEPT


def test_an_agents_plan_without_effect_is_still_answered(
    client: TestClient, admin: dict[str, str], three_rows: str, owner_sql: OwnerSql
) -> None:
    """The plan alone, a write analyzed in a transaction that rolls back, and a read analyzed: all answered,
    nothing changed. A person's analyzed write runs, as in PostgREST."""
    agent = agent_headers(client, admin, ["records:write"], "planner")
    url = f"/api/database/records/{three_rows}"
    plain = client.delete(url, headers={**agent, "Accept": "application/vnd.pgrst.plan+json"})
    assert plain.status_code == 200 and plain.json()[0]["Plan"]["Node Type"] == "ModifyTable", plain.text
    rolled_back = client.delete(url, headers={**agent, "Accept": ANALYZE, "Prefer": "tx=rollback"})
    assert rolled_back.status_code == 200 and "Actual Rows" in rolled_back.text, rolled_back.text
    read = client.get(url, headers={**agent, "Accept": ANALYZE})
    assert read.status_code == 200 and "Actual Rows" in read.text, read.text
    assert table_notes(owner_sql, three_rows) == KEPT

    by_person = client.delete(f"{url}?id=eq.3", headers={**admin, "Accept": ANALYZE})
    assert by_person.status_code == 200, by_person.text
    assert table_notes(owner_sql, three_rows) == KEPT[:2]
