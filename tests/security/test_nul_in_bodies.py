"""Text holding NUL (`\\u0000`) is a client's mistake on every `/api` route that reads a JSON body: a 400 that
names the field, before anything is done or stored (Postgres's text cannot hold NUL, so it used to surface
later, as a 500, after the route had already done its work)."""

from __future__ import annotations

import secrets
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers

CASES = [
    (
        "/api/database/webhooks",
        {"name": "a\u0000b", "events": ["INSERT"], "url": "https://example.com/x"},
        "name",
    ),
    (
        "/api/database/webhooks",
        {"name": "n", "events": ["INSERT"], "url": "https://example.com/x"},
        "tableName",
    ),
    (
        "/api/advisor/suppressions",
        {"ruleId": "rls-disabled", "scope": "rule", "reason": "other", "note": "a\u0000b"},
        "note",
    ),
    ("/api/secrets", {"key": "NUL_IN_VALUE", "value": "a\u0000b"}, "value"),
]


@pytest.mark.parametrize(("path", "body", "field"), CASES)
def test_a_nul_in_a_body_is_a_400_naming_the_field(
    client: TestClient, database_url: str, path: str, body: dict[str, Any], field: str
) -> None:
    admin = admin_headers(client)
    table = f"nul_{secrets.token_hex(4)}"
    with psycopg.connect(database_url) as conn:
        conn.execute(f"create table {table} (id int primary key)")
    sent = dict(body)
    if path == "/api/database/webhooks":
        sent["tableName"] = f"{table}\u0000" if field == "tableName" else table
    before = client.get(path, headers=admin).json()
    answer = client.post(path, headers=admin, json=sent)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "INVALID_INPUT"
    assert answer.json()["message"] == f"{field}: text cannot contain the NUL character (\\u0000)."
    assert client.get(path, headers=admin).json() == before


def test_a_nul_deep_in_a_body_names_its_path(client: TestClient) -> None:
    admin = admin_headers(client)
    answer = client.post(
        "/api/schedules",
        headers=admin,
        json={
            "name": "nul",
            "cronSchedule": "*/5 * * * *",
            "functionUrl": "https://example.com/x",
            "headers": {"X-Note": "a\u0000"},
        },
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"].startswith("headers.X-Note: text cannot contain the NUL character")


def test_a_nul_in_a_query_parameter_is_a_400(client: TestClient) -> None:
    """Where a query parameter goes to the database as it is (the audit trail's filters), psycopg refuses
    the NUL before sending it: the error boundary answers 400 with the reason, not a 500."""
    answer = client.get("/api/logs/audits", params={"actor": "a\u0000b"}, headers=admin_headers(client))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "INVALID_INPUT"
    assert "NUL" in answer.json()["message"]


def test_a_deeply_nested_body_is_walked_without_recursion(client: TestClient) -> None:
    """The JSON parser takes 1,024 levels, more than Python's recursion allows: the NUL check must not
    turn such a body into a 500."""
    deep = "[" * 1000 + '"a\\u0000"' + "]" * 1000
    answer = client.post(
        "/api/schedules",
        headers={**admin_headers(client), "Content-Type": "application/json"},
        content=deep,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"].startswith("0." * 999 + "0: text cannot contain")
    harmless = "[" * 1000 + '"a\\\\u0000"' + "]" * 1000  # (an escaped backslash, then u0000: no NUL)
    answer = client.post(
        "/api/schedules",
        headers={**admin_headers(client), "Content-Type": "application/json"},
        content=harmless,
    )
    assert answer.status_code == 400 and "JSON object" in answer.json()["message"], answer.text
