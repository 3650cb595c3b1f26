"""PostgREST's opt-in features with their switches off (the default, as in PostgREST): aggregates are 400
PGRST123, the plan media types are 406 PGRST107, and `Prefer: tx=` is ignored (the transaction commits,
and nothing says it was applied). (On: `test_opt_in_features`.)
"""

from __future__ import annotations

import psycopg
import pytest
from starlette.testclient import TestClient

RECORDS = "/api/database/records"


@pytest.fixture(scope="module", autouse=True)
def drafts(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE drafts_off (id int PRIMARY KEY, amount int)")


@pytest.mark.parametrize("select", ["count()", "amount.sum()", "c:count()", "amount.avg()::int"])
def test_aggregates_are_refused(client: TestClient, admin: dict[str, str], select: str) -> None:
    response = client.get(f"{RECORDS}/drafts_off?select={select}", headers=admin)
    assert response.status_code == 400
    assert response.json() == {
        "code": "PGRST123",
        "message": "Use of aggregate functions is not allowed",
        "details": None,
        "hint": None,
    }


@pytest.mark.parametrize(
    "accept",
    ["application/vnd.pgrst.plan", "application/vnd.pgrst.plan+json", "application/vnd.pgrst.plan+text"],
)
def test_the_plan_is_not_acceptable(client: TestClient, admin: dict[str, str], accept: str) -> None:
    response = client.get(f"{RECORDS}/drafts_off", headers={**admin, "Accept": accept})
    assert response.status_code == 406
    assert response.json()["code"] == "PGRST107"
    deleted = client.delete(f"{RECORDS}/drafts_off?id=eq.0", headers={**admin, "Accept": accept})
    assert deleted.status_code == 406


def test_prefer_tx_is_ignored(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        f"{RECORDS}/drafts_off",
        headers={**admin, "Prefer": "tx=rollback, handling=strict"},
        json={"id": 1, "amount": 5},
    )
    assert response.status_code == 201, response.text
    assert response.headers["preference-applied"] == "handling=strict"
    kept = client.get(f"{RECORDS}/drafts_off?id=eq.1", headers=admin)
    assert kept.json() == [{"id": 1, "amount": 5}]


def test_the_backwards_compatible_count_needs_no_switch(client: TestClient, admin: dict[str, str]) -> None:
    """`select=count` on a table without such a column is Postgres's `count(t)`, which PostgREST passes
    through whatever `db-aggregates-enabled` says (AggregateFunctionsSpec, "backwards compat")."""
    client.post(
        f"{RECORDS}/drafts_off", headers=admin, json=[{"id": 10, "amount": 1}, {"id": 11, "amount": 2}]
    )
    response = client.get(f"{RECORDS}/drafts_off?select=count&id=in.(10,11)", headers=admin)
    assert response.json() == [{"count": 2}]
