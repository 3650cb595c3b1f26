"""`/api/advisor`: InsForge's routes, shapes, codes and messages over the real database; suppressions that
hide findings by instance and by rule; admin only; agent keys by scope (an agent's suppression waits for a
person); every bad input a 400 that changes nothing; scans audited."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers, agent_headers, anon_headers, mcp_call, user_headers


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


def open_table(database_url: str) -> str:
    """A table in public with RLS off, readable by anon: an rls-disabled finding, `public.<name>`."""
    table = f"exposed_{secrets.token_hex(4)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"create table public.{table} (id int)")
        conn.execute(f"alter table public.{table} disable row level security")
    return f"public.{table}"


def scan(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    scanned = client.post("/api/advisor/scan", headers=headers)
    assert scanned.status_code == 201, scanned.text
    answer: dict[str, Any] = scanned.json()
    return answer


def listed(client: TestClient, admin: dict[str, str], rule: str = "rls-disabled") -> set[str]:
    page = client.get("/api/advisor/issues?limit=1000&category=security", headers=admin).json()
    return {issue.get("affectedObject", "") for issue in page["issues"] if issue["ruleId"] == rule}


def suppress(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/api/advisor/suppressions", headers=headers, json=body)


def test_scan_latest_and_issues_shapes(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    table = open_table(database_url)
    answer = scan(client, admin)
    assert set(answer) == {
        "scanId", "message", "status", "scanType", "scannedAt", "errorMessage", "skippedRules", "summary",
    }  # fmt: skip
    assert answer["message"] == "Scan completed" and answer["status"] == "completed"
    assert answer["scanType"] == "manual" and uuid.UUID(answer["scanId"])
    assert set(answer["summary"]) == {"total", "critical", "warning", "info"}
    assert answer["summary"]["critical"] >= 1
    summary = answer["summary"]
    assert summary["total"] == summary["critical"] + summary["warning"] + summary["info"]

    latest = client.get("/api/advisor/latest", headers=admin)
    assert latest.status_code == 200
    assert latest.json() == {key: value for key, value in answer.items() if key != "message"}

    page = client.get("/api/advisor/issues", headers=admin).json()
    assert set(page) == {"issues", "total"} and page["total"] == summary["total"]
    issue = next(issue for issue in page["issues"] if issue.get("affectedObject") == table)
    assert set(issue) == {
        "id", "ruleId", "severity", "category", "title", "description", "affectedObject", "recommendation",
    }  # fmt: skip
    severities = [issue["severity"] for issue in page["issues"]]
    order = ["critical", "warning", "info"]
    assert severities == sorted(severities, key=order.index)

    one = client.get("/api/advisor/issues?severity=critical&limit=1&offset=0", headers=admin).json()
    assert len(one["issues"]) == 1 and one["total"] == summary["critical"]
    assert (
        client.get("/api/advisor/issues?category=health", headers=admin).json()["issues"]
        == [issue for issue in page["issues"] if issue["category"] == "health"][:50]
    )


def test_suppress_one_instance_then_restore(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    table, other = open_table(database_url), open_table(database_url)
    scan(client, admin)
    before = client.get("/api/advisor/latest", headers=admin).json()["summary"]
    created = suppress(
        client, admin, ruleId="rls-disabled", scope="instance", affectedObject=table, reason="accepted_risk"
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert {"id", "ruleId", "scope", "reason", "affectedObject", "createdBy", "createdAt"} <= set(body)
    assert body["ruleId"] == "rls-disabled" and body["affectedObject"] == table and "note" not in body
    assert table not in listed(client, admin) and other in listed(client, admin)
    assert (
        client.get("/api/advisor/latest", headers=admin).json()["summary"]["critical"]
        == before["critical"] - 1
    )
    # It holds across scans, and the list names what it hides.
    scan(client, admin)
    assert table not in listed(client, admin)
    entries = client.get("/api/advisor/suppressions", headers=admin).json()["suppressions"]
    entry = next(item for item in entries if item["id"] == body["id"])
    assert entry["title"] == "Table publicly accessible" and entry["severity"] == "critical"
    assert entry["category"] == "security"

    again = suppress(
        client, admin, ruleId="rls-disabled", scope="instance", affectedObject=table, reason="wont_fix"
    )
    assert again.status_code == 409 and again.json()["error"] == "DATABASE_DUPLICATE"
    assert again.json()["message"] == "This finding is already ignored."

    deleted = client.delete(f"/api/advisor/suppressions/{body['id']}", headers=admin)
    assert deleted.status_code == 200 and deleted.json() == {"deleted": True}
    assert table in listed(client, admin)
    gone = client.delete(f"/api/advisor/suppressions/{body['id']}", headers=admin)
    assert gone.status_code == 404 and gone.json()["error"] == "NOT_FOUND"
    assert gone.json()["message"] == "Suppression not found"


def test_suppress_a_whole_rule(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    table = open_table(database_url)
    scan(client, admin)
    created = suppress(
        client, admin, ruleId="rls-disabled", scope="rule", reason="other", note="staging copy"
    )
    assert created.status_code == 201, created.text
    try:
        assert "affectedObject" not in created.json() and created.json()["note"] == "staging copy"
        assert listed(client, admin) == set()
        critical = client.get("/api/advisor/issues?severity=critical&limit=1000", headers=admin).json()
        assert all(issue["ruleId"] != "rls-disabled" for issue in critical["issues"])
    finally:
        client.delete(f"/api/advisor/suppressions/{created.json()['id']}", headers=admin)
    assert table in listed(client, admin)


VALID = {"ruleId": "rls-disabled", "scope": "rule", "reason": "wont_fix"}


def changed(**fields: Any) -> dict[str, Any]:
    """A valid suppression with `fields` changed (None: left out)."""
    merged = {**VALID, **fields}
    return {name: value for name, value in merged.items() if value is not None}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (changed(ruleId=None), "Invalid ruleId: must be a non-empty string"),
        (changed(ruleId="   "), "Invalid ruleId: must be a non-empty string"),
        (changed(ruleId="no-such-rule"), "Invalid ruleId: must be one of "),
        (changed(scope="table"), "Invalid scope: must be one of instance, rule"),
        (changed(reason="meh"), "Invalid reason: must be one of false_positive"),
        (changed(scope="instance"), "Invalid affectedObject: required"),
        (changed(scope="instance", affectedObject="x" * 501), "Invalid affectedObject: required"),
        (changed(note=5), "Invalid note: must be a string"),
        (changed(reason="other"), 'Invalid note: required when reason is "other"'),
        (changed(extra=1), "Unknown field: extra"),
    ],
)
def test_bad_suppressions_are_400(
    client: TestClient, admin: dict[str, str], database_url: str, body: dict[str, Any], message: str
) -> None:
    answer = client.post("/api/advisor/suppressions", headers=admin, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "INVALID_INPUT" and answer.json()["message"].startswith(message)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "select count(*) from system.advisor_suppressions where note = 'x' or scope = 'table'"
        )
        assert row.fetchone() == (0,)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("severity=bad", "Invalid severity parameter: must be one of critical, warning, info"),
        ("category=bad", "Invalid category parameter: must be one of security, performance, health"),
        ("limit=0", "Invalid limit parameter: must be a positive integer"),
        ("limit=abc", "Invalid limit parameter: must be a positive integer"),
        ("limit=1001", "Invalid limit parameter: must be a positive integer, at most 1000"),
        ("offset=-1", "Invalid offset parameter: must be a non-negative integer"),
        ("offset=1.5", "Invalid offset parameter: must be a non-negative integer"),
    ],
)
def test_bad_issue_queries_are_400(
    client: TestClient, admin: dict[str, str], query: str, message: str
) -> None:
    answer = client.get(f"/api/advisor/issues?{query}", headers=admin)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "INVALID_INPUT" and answer.json()["message"].startswith(message)


def test_bad_bodies_and_ids(client: TestClient, admin: dict[str, str]) -> None:
    not_json = client.post(
        "/api/advisor/suppressions", headers={**admin, "Content-Type": "application/json"}, content=b"{"
    )
    assert not_json.status_code == 400
    a_list = client.post("/api/advisor/suppressions", headers=admin, json=["rls-disabled"])
    assert a_list.status_code == 400
    bad_id = client.delete("/api/advisor/suppressions/not-a-uuid", headers=admin)
    assert bad_id.status_code == 400 and bad_id.json()["message"] == "Invalid id: must be a valid UUID"


def test_a_scan_while_one_runs_is_409(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(14589230, 1)")
        busy = client.post("/api/advisor/scan", headers=admin)
        conn.execute("select pg_advisory_unlock(14589230, 1)")
    assert busy.status_code == 409
    assert busy.json()["message"] == "A database advisor scan is already in progress."
    assert client.post("/api/advisor/scan", headers=admin).status_code == 201


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/advisor/scan"),
        ("GET", "/api/advisor/latest"),
        ("GET", "/api/advisor/issues"),
        ("GET", "/api/advisor/suppressions"),
        ("POST", "/api/advisor/suppressions"),
        # (a fixed id: pytest-xdist needs every worker to collect the same parameters)
        ("DELETE", "/api/advisor/suppressions/0b6f3c1e-2d4a-4e8b-9c7d-5a1f2e3d4c5b"),
    ],
)
def test_admin_only(client: TestClient, method: str, path: str) -> None:
    body = {"ruleId": "rls-disabled", "scope": "rule", "reason": "wont_fix"} if method == "POST" else None
    nobody = client.request(method, path, json=body)
    assert nobody.status_code == 401, nobody.text
    anon = client.request(method, path, headers=anon_headers(client), json=body)
    assert (anon.status_code, anon.json()["error"]) == (401, "AUTH_UNAUTHORIZED"), anon.text
    user = user_headers(client, str(uuid.uuid4()), "someone@example.com")
    refused = client.request(method, path, headers=user, json=body)
    assert (refused.status_code, refused.json()["error"]) == (403, "AUTH_UNAUTHORIZED"), refused.text


def test_scans_and_suppressions_are_audited(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    answer = scan(client, admin)
    user = user_headers(client, str(uuid.uuid4()), "someone@example.com")
    client.post("/api/advisor/suppressions", headers=user, json={"ruleId": "rls-disabled", "scope": "rule"})
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select action, outcome, details from system.audit_logs where module = 'ADVISOR' "
            "order by created_at desc limit 50"
        ).fetchall()
    runs = [
        details for action, outcome, details in rows if action == "RUN_ADVISOR_SCAN" and outcome == "success"
    ]
    assert any(details["scanId"] == answer["scanId"] for details in runs)
    assert any(action == "CREATE_ADVISOR_SUPPRESSION" and outcome == "refused" for action, outcome, _ in rows)


def test_agent_scopes_on_rest_and_mcp(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    table = open_table(database_url)
    reader = agent_headers(client, admin, ["advisor:read"])
    assert client.get("/api/advisor/issues", headers=reader).status_code == 200
    # A scan is a read on REST as on MCP, though a POST (it changes nothing in the project).
    over_rest = client.post("/api/advisor/scan", headers=reader)
    assert over_rest.status_code == 201 and over_rest.json()["status"] == "completed", over_rest.text

    scanned = json.loads(mcp_call(client, reader, "run-advisor-scan", {}))
    assert scanned["status"] == "completed"
    issues = json.loads(
        mcp_call(client, reader, "get-advisor-issues", {"category": "security", "limit": 1000})
    )
    assert table in {issue.get("affectedObject") for issue in issues["issues"]}
    assert json.loads(mcp_call(client, reader, "get-advisor-summary", {}))["scanId"] == scanned["scanId"]
    assert "suppressions" in json.loads(mcp_call(client, reader, "list-advisor-suppressions", {}))
    arguments: dict[str, object] = {
        "ruleId": "rls-disabled",
        "scope": "instance",
        "affectedObject": table,
        "reason": "wont_fix",
    }
    hidden = mcp_call(client, reader, "suppress-advisor-finding", arguments)
    assert "scopes do not reach advisor:write (suppress-advisor-finding)" in hidden, hidden

    other = agent_headers(client, admin, ["database:read"])
    assert client.get("/api/advisor/latest", headers=other).status_code == 403

    # A writer's suppression waits for a person, on MCP as on REST.
    writer = agent_headers(client, admin, ["advisor:write"])
    held = json.loads(mcp_call(client, writer, "suppress-advisor-finding", arguments))
    assert held["status"] == "pending_approval", held
    rest = client.post("/api/advisor/suppressions", headers=writer, json=arguments)
    assert rest.status_code == 202 and rest.json()["status"] == "pending_approval", rest.text
    assert table in listed(client, admin)
