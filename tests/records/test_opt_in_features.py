"""PostgREST's opt-in features with their switches on (`KILNBASE_DB_AGGREGATES_ENABLED`,
`KILNBASE_DB_PLAN_ENABLED`, `KILNBASE_DB_TX_END=commit-allow-override`), from its documentation and
`AggregateFunctionsSpec`, `PlanSpec` and `RollbackSpec`. (Off, the default: `test_opt_in_features_off`.)
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.config import RecordsSettings, Settings

RECORDS = "/api/database/records"
RPC = "/api/database/rpc"
PLAN_JSON = "application/vnd.pgrst.plan+json"


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        records=RecordsSettings(aggregates_enabled=True, plan_enabled=True, tx_end="commit-allow-override"),
    )


@pytest.fixture(scope="module", autouse=True)
def invoices(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            CREATE TABLE jobs (id int PRIMARY KEY, name text);
            CREATE TABLE invoices (id int PRIMARY KEY, job_id int REFERENCES jobs (id), total int,
                                   details jsonb);
            INSERT INTO jobs VALUES (1, 'Windows 7'), (2, 'Windows 10'), (3, 'IOS');
            INSERT INTO invoices VALUES (1, 1, 100, '{"key": "4"}'), (2, 1, 200, '{"key": "20"}'),
                                        (3, 2, 500, NULL), (4, 2, 4000, NULL), (5, 3, 4000, NULL);
            CREATE TABLE drafts (id int PRIMARY KEY, body text);
            CREATE FUNCTION all_invoices() RETURNS SETOF invoices LANGUAGE sql STABLE
              AS 'SELECT * FROM invoices';
            """
        )


def ok(client: TestClient, headers: dict[str, str], query: str) -> Any:
    response = client.get(f"{RECORDS}/{query}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_count_of_all_rows_with_alias_and_cast(client: TestClient, admin: dict[str, str]) -> None:
    assert ok(client, admin, "invoices?select=count()") == [{"count": 5}]
    assert ok(client, admin, "invoices?select=cnt:count()") == [{"cnt": 5}]
    assert ok(client, admin, "invoices?select=count()::text") == [{"count": "5"}]


def test_aggregates_group_by_the_other_selected_columns(client: TestClient, admin: dict[str, str]) -> None:
    assert ok(client, admin, "invoices?select=c:count(),job_id&order=job_id.desc") == [
        {"c": 1, "job_id": 3},
        {"c": 2, "job_id": 2},
        {"c": 2, "job_id": 1},
    ]
    assert ok(
        client, admin, "invoices?select=total.sum(),total.max(),total.min(),jid:job_id&order=job_id.desc"
    ) == [
        {"sum": 4000, "max": 4000, "min": 4000, "jid": 3},
        {"sum": 4500, "max": 4000, "min": 500, "jid": 2},
        {"sum": 300, "max": 200, "min": 100, "jid": 1},
    ]


@pytest.mark.parametrize(
    ("select", "expected"),
    [
        ("total.sum()", {"sum": 8800}),
        ("total.avg()", {"avg": 1760}),
        ("total.min()", {"min": 100}),
        ("total.max()", {"max": 4000}),
        ("total.count()", {"count": 5}),
        ("charged:total.sum()::text", {"charged": "8800"}),
        ("details->>key::integer.sum()", {"sum": 24}),
        ("s:details->>key::integer.sum()::text", {"s": "24"}),
    ],
)
def test_each_aggregate_and_its_casts(
    client: TestClient, admin: dict[str, str], select: str, expected: dict[str, Any]
) -> None:
    assert ok(client, admin, f"invoices?select={select}") == [expected]


def test_aggregates_inside_an_embed_and_on_a_function(client: TestClient, admin: dict[str, str]) -> None:
    assert ok(client, admin, "jobs?select=name,invoices(total.sum(),total.count())&order=id") == [
        {"name": "Windows 7", "invoices": [{"sum": 300, "count": 2}]},
        {"name": "Windows 10", "invoices": [{"sum": 4500, "count": 2}]},
        {"name": "IOS", "invoices": [{"sum": 4000, "count": 1}]},
    ]
    response = client.get(f"{RPC}/all_invoices?select=id.max()", headers=admin)
    assert response.json() == [{"max": 5}]


def test_the_backwards_compatible_count_inside_an_embed(client: TestClient, admin: dict[str, str]) -> None:
    assert ok(client, admin, "invoices?select=count") == [{"count": 5}]
    assert ok(client, admin, "jobs?select=name,invoices(count)&order=id") == [
        {"name": "Windows 7", "invoices": [{"count": 2}]},
        {"name": "Windows 10", "invoices": [{"count": 2}]},
        {"name": "IOS", "invoices": [{"count": 1}]},
    ]


def test_a_to_one_embed_is_a_grouping_column(client: TestClient, admin: dict[str, str]) -> None:
    assert ok(client, admin, "invoices?select=job_id,total:total.sum(),jobs(name)&order=job_id") == [
        {"job_id": 1, "total": 300, "jobs": {"name": "Windows 7"}},
        {"job_id": 2, "total": 4500, "jobs": {"name": "Windows 10"}},
        {"job_id": 3, "total": 4000, "jobs": {"name": "IOS"}},
    ]


def test_the_execution_plan_of_a_read(client: TestClient, admin: dict[str, str]) -> None:
    response = client.get(f"{RECORDS}/invoices?id=in.(1,2,3)", headers={**admin, "Accept": PLAN_JSON})
    assert response.status_code == 200, response.text
    assert (
        response.headers["content-type"]
        == 'application/vnd.pgrst.plan+json; for="application/json"; charset=utf-8'
    )
    assert response.json()[0]["Plan"]["Total Cost"] > 0
    verbose = client.get(
        f"{RECORDS}/invoices", headers={**admin, "Accept": f"{PLAN_JSON}; options=verbose|analyze"}
    )
    assert verbose.headers["content-type"] == (
        'application/vnd.pgrst.plan+json; for="application/json"; options=analyze|verbose; charset=utf-8'
    )
    assert "Actual Rows" in verbose.json()[0]["Plan"] and "Output" in verbose.json()[0]["Plan"]
    text = client.get(
        f"{RECORDS}/invoices", headers={**admin, "Accept": 'application/vnd.pgrst.plan+text; for="text/csv"'}
    )
    assert text.headers["content-type"] == 'application/vnd.pgrst.plan+text; for="text/csv"; charset=utf-8'
    assert "cost=" in text.text


def test_the_plan_of_a_write_does_not_write(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        f"{RECORDS}/drafts", headers={**admin, "Accept": PLAN_JSON}, json={"id": 1, "body": "planned"}
    )
    assert response.status_code == 200, response.text
    assert response.json()[0]["Plan"]["Total Cost"] >= 0
    assert ok(client, admin, "drafts?id=eq.1") == []
    call = client.get(f"{RPC}/all_invoices", headers={**admin, "Accept": PLAN_JSON})
    assert call.status_code == 200 and call.json()[0]["Plan"]["Total Cost"] > 0


def test_prefer_tx_rollback_answers_and_keeps_nothing(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        f"{RECORDS}/drafts",
        headers={**admin, "Prefer": "tx=rollback, return=representation"},
        json={"id": 2, "body": "rolled back"},
    )
    assert response.status_code == 201, response.text
    assert response.json() == [{"id": 2, "body": "rolled back"}]
    assert response.headers["preference-applied"] == "return=representation, tx=rollback"
    assert ok(client, admin, "drafts?id=eq.2") == []
    committed = client.post(
        f"{RECORDS}/drafts", headers={**admin, "Prefer": "tx=commit"}, json={"id": 3, "body": "kept"}
    )
    assert committed.headers["preference-applied"] == "tx=commit"
    assert ok(client, admin, "drafts?id=eq.3") == [{"id": 3, "body": "kept"}]
