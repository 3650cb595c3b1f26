"""`/api/schedules`: InsForge's routes, shapes, codes and messages over the real database; every field
checked (a mistake is a 400 that changes nothing); admin only; headers encrypted at rest; every change
audited; an agent's delete waits for approval."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers, agent_headers, anon_headers, mcp_call, user_headers

TARGET = "https://example.com/functions/report"


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


def schedule(**fields: Any) -> dict[str, Any]:
    return {
        "name": f"job-{secrets.token_hex(3)}",
        "cronSchedule": "*/5 * * * *",
        "functionUrl": TARGET,
        "httpMethod": "POST",
        **fields,
    }


def create(client: TestClient, admin: dict[str, str], **fields: Any) -> str:
    created = client.post("/api/schedules", json=schedule(**fields), headers=admin)
    assert created.status_code == 201, created.text
    job_id: str = created.json()["id"]
    return job_id


def count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("select count(*) from schedules.jobs").fetchone()
    assert row is not None
    return int(row[0])


def test_create_read_list_update_delete(client: TestClient, admin: dict[str, str]) -> None:
    body = schedule()
    created = client.post("/api/schedules", json={**body, "body": {"report": "daily"}}, headers=admin)
    assert created.status_code == 201, created.text
    answer = created.json()
    assert set(answer) == {"id", "cronJobId", "message"}
    assert answer["message"] == "Schedule created successfully"
    assert isinstance(answer["cronJobId"], str)
    job_id = answer["id"]

    got = client.get(f"/api/schedules/{job_id}", headers=admin)
    assert got.status_code == 200
    job = got.json()
    assert set(job) == {
        "id",
        "name",
        "cronSchedule",
        "functionUrl",
        "httpMethod",
        "headers",
        "body",
        "cronJobId",
        "lastExecutedAt",
        "isActive",
        "nextRun",
        "createdAt",
        "updatedAt",
    }
    assert job["name"] == body["name"] and job["cronSchedule"] == "*/5 * * * *"
    assert job["functionUrl"] == TARGET and job["httpMethod"] == "POST"
    assert job["headers"] is None and job["body"] == {"report": "daily"}
    assert job["isActive"] is True and job["lastExecutedAt"] is None
    assert job["nextRun"].endswith("Z") and job["nextRun"][14:16] in {f"{m:02d}" for m in range(0, 60, 5)}
    assert job["cronJobId"] == answer["cronJobId"]

    listed = client.get("/api/schedules", headers=admin).json()
    assert isinstance(listed, list) and job_id in [row["id"] for row in listed]

    renamed = client.patch(f"/api/schedules/{job_id}", json={"name": "renamed job"}, headers=admin)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["message"] == "Schedule updated successfully"
    assert renamed.json()["id"] == job_id
    assert renamed.json()["cronJobId"] != answer["cronJobId"]  # scheduled anew, as pg_cron's job is
    after = client.get(f"/api/schedules/{job_id}", headers=admin).json()
    assert after["name"] == "renamed job" and after["nextRun"] == job["nextRun"]  # same cadence, same run

    off = client.patch(f"/api/schedules/{job_id}", json={"isActive": False}, headers=admin)
    assert off.status_code == 200 and "cronJobId" not in off.json()
    stopped = client.get(f"/api/schedules/{job_id}", headers=admin).json()
    assert stopped["isActive"] is False and stopped["nextRun"] is None and stopped["cronJobId"] is None
    renamed_off = client.patch(f"/api/schedules/{job_id}", json={"name": "still off"}, headers=admin)
    assert renamed_off.status_code == 200
    assert client.get(f"/api/schedules/{job_id}", headers=admin).json()["isActive"] is False
    on = client.patch(
        f"/api/schedules/{job_id}", json={"isActive": True, "cronSchedule": "30 seconds"}, headers=admin
    )
    assert on.status_code == 200 and on.json()["cronJobId"]
    running = client.get(f"/api/schedules/{job_id}", headers=admin).json()
    assert running["isActive"] is True and running["cronSchedule"] == "30 seconds" and running["nextRun"]

    deleted = client.delete(f"/api/schedules/{job_id}", headers=admin)
    assert deleted.status_code == 200 and deleted.json() == {"message": "Schedule deleted successfully."}
    gone = client.get(f"/api/schedules/{job_id}", headers=admin)
    assert gone.status_code == 404
    assert gone.json()["error"] == "SCHEDULE_NOT_FOUND" and gone.json()["message"] == "Schedule not found."
    assert gone.json()["statusCode"] == 404 and gone.json()["nextActions"]
    for again in (
        client.delete(f"/api/schedules/{job_id}", headers=admin),
        client.patch(f"/api/schedules/{job_id}", json={"name": "nobody"}, headers=admin),
        client.get(f"/api/schedules/{job_id}/logs", headers=admin),
    ):
        assert again.status_code == 404 and again.json()["error"] == "SCHEDULE_NOT_FOUND"


def test_an_id_that_is_no_uuid_is_not_found(client: TestClient, admin: dict[str, str]) -> None:
    for path in ("/api/schedules/nope", "/api/schedules/nope/logs", f"/api/schedules/{uuid.uuid4()}"):
        answer = client.get(path, headers=admin)
        assert answer.status_code == 404 and answer.json()["error"] == "SCHEDULE_NOT_FOUND"


def test_logs_page_shape(client: TestClient, admin: dict[str, str]) -> None:
    job_id = create(client, admin)
    page = client.get(f"/api/schedules/{job_id}/logs", params={"limit": 10, "offset": 0}, headers=admin)
    assert page.status_code == 200
    assert page.json() == {"logs": [], "totalCount": 0, "limit": 10, "offset": 0}
    assert client.get(f"/api/schedules/{job_id}/logs", headers=admin).json()["limit"] == 50
    for params in ({"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"offset": -1}):
        refused = client.get(f"/api/schedules/{job_id}/logs", params=params, headers=admin)
        assert refused.status_code == 400 and refused.json()["error"] == "INVALID_INPUT"


LONG = "x" * 256


@pytest.mark.parametrize(
    ("fields", "code", "names"),
    [
        ({"name": "ab"}, "INVALID_INPUT", "name: Schedule name must be at least 3 characters long"),
        ({"name": LONG}, "INVALID_INPUT", "name:"),
        ({"name": 12345}, "INVALID_INPUT", "name:"),
        ({"name": None}, "INVALID_INPUT", "name: Required"),
        ({"cronSchedule": "every minute"}, "INVALID_INPUT", "cronSchedule: Invalid cron schedule"),
        ({"cronSchedule": "0 * * * * *"}, "INVALID_INPUT", "cronSchedule: Invalid cron schedule"),
        ({"cronSchedule": 5}, "INVALID_INPUT", "cronSchedule:"),
        ({"cronSchedule": "61 * * * *"}, "SCHEDULE_INVALID_CRON", "Invalid cron expression: Bad minute"),
        ({"cronSchedule": "0 0 31 2 *"}, "SCHEDULE_INVALID_CRON", "Bad day-of-month"),
        ({"cronSchedule": "60 seconds"}, "SCHEDULE_INVALID_CRON", "Use 1-59 seconds"),
        ({"cronSchedule": "0 seconds"}, "SCHEDULE_INVALID_CRON", "Use 1-59 seconds"),
        ({"cronSchedule": "*" + " *" * 60}, "INVALID_INPUT", "cronSchedule:"),
        (
            {"functionUrl": "ftp://example.com/x"},
            "INVALID_INPUT",
            "functionUrl: The function URL must use http",
        ),
        ({"functionUrl": "not a url"}, "INVALID_INPUT", "functionUrl:"),
        ({"functionUrl": "http://"}, "INVALID_INPUT", "functionUrl:"),
        ({"functionUrl": "//example.com/x"}, "INVALID_INPUT", "functionUrl:"),
        ({"functionUrl": "https://example.com/" + "a" * 2100}, "INVALID_INPUT", "functionUrl:"),
        ({"functionUrl": "http://example.com:port/"}, "INVALID_INPUT", "functionUrl:"),
        ({"httpMethod": "get"}, "INVALID_INPUT", "httpMethod: must be one of GET, POST, PUT, PATCH, DELETE"),
        ({"httpMethod": "TRACE"}, "INVALID_INPUT", "httpMethod:"),
        ({"headers": ["X-A: b"]}, "INVALID_INPUT", "headers: must be an object"),
        ({"headers": {"X-A": 1}}, "INVALID_INPUT", "headers.X-A: must be a string"),
        ({"headers": {"X-A": "b\r\nX-Injected: c"}}, "INVALID_INPUT", "headers.X-A: no line breaks"),
        ({"headers": {"Bad Name": "b"}}, "INVALID_INPUT", "not a valid header name"),
        ({"headers": {"Content-Length": "3"}}, "INVALID_INPUT", "headers.Content-Length: set by the HTTP"),
        ({"headers": {f"X-{i}": "v" for i in range(51)}}, "INVALID_INPUT", "headers: at most 50 headers"),
        ({"headers": {"X-A": "v" * 9000}}, "INVALID_INPUT", "headers.X-A: at most 8192 characters"),
        ({"body": ["not", "an", "object"]}, "INVALID_INPUT", "body: must be a JSON object"),
        ({"body": "text"}, "INVALID_INPUT", "body: must be a JSON object"),
        ({"body": {"big": "x" * 70_000}}, "INVALID_INPUT", "body: at most 65536 bytes"),
        ({"isActive": False}, "INVALID_INPUT", "isActive: not a field of a schedule"),
        ({"cron": "* * * * *"}, "INVALID_INPUT", "cron: not a field of a schedule"),
    ],
)
def test_each_bad_field_is_a_400_that_creates_nothing(
    client: TestClient,
    admin: dict[str, str],
    database_url: str,
    fields: dict[str, Any],
    code: str,
    names: str,
) -> None:
    before = count(database_url)
    refused = client.post("/api/schedules", json=schedule(**fields), headers=admin)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == code and names in refused.json()["message"], refused.json()
    assert refused.json()["nextActions"]
    assert count(database_url) == before


def test_every_problem_is_named_at_once(client: TestClient, admin: dict[str, str]) -> None:
    refused = client.post("/api/schedules", json={"name": "ab", "httpMethod": "get"}, headers=admin)
    message = refused.json()["message"]
    for part in ("name:", "cronSchedule: Required", "functionUrl: Required", "httpMethod:"):
        assert part in message


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "ab"},
        {"cronSchedule": "61 * * * *"},
        {"functionUrl": "file:///etc/passwd"},
        {"httpMethod": "HEAD"},
        {"headers": {"X-A": "b\nc"}},
        {"body": [1]},
        {"isActive": "no"},
        {"id": str(uuid.uuid4())},
    ],
)
def test_a_bad_update_is_a_400_that_changes_nothing(
    client: TestClient, admin: dict[str, str], fields: dict[str, Any]
) -> None:
    job_id = create(client, admin, headers={"X-Plain": "kept"})
    before = client.get(f"/api/schedules/{job_id}", headers=admin).json()
    refused = client.patch(f"/api/schedules/{job_id}", json=fields, headers=admin)
    assert refused.status_code == 400, refused.text
    assert client.get(f"/api/schedules/{job_id}", headers=admin).json() == before


def test_malformed_bodies_are_400(client: TestClient, admin: dict[str, str]) -> None:
    for content in (b"", b"{not json", b"[1, 2]"):
        refused = client.post(
            "/api/schedules", content=content, headers={**admin, "Content-Type": "application/json"}
        )
        assert refused.status_code == 400 and refused.json()["error"] == "INVALID_INPUT"


def test_a_header_naming_a_missing_secret_is_404(client: TestClient, admin: dict[str, str]) -> None:
    key = f"MISSING_{secrets.token_hex(4).upper()}"
    refused = client.post(
        "/api/schedules",
        json=schedule(headers={"Authorization": f"Bearer ${{{{secrets.{key}}}}}"}),
        headers=admin,
    )
    assert refused.status_code == 404
    assert refused.json()["error"] == "SECRET_NOT_FOUND"
    assert (
        refused.json()["message"] == f'Secret with key "{key}" not found for schedule header "Authorization".'
    )


def test_headers_are_shown_as_given_and_encrypted_at_rest(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    key = f"SCHED_{secrets.token_hex(4).upper()}"
    value = f"secret-value-{secrets.token_hex(8)}"
    assert client.post("/api/secrets", json={"key": key, "value": value}, headers=admin).status_code == 201
    headers = {"Authorization": f"Bearer ${{{{secrets.{key}}}}}", "X-Literal": "literal-header-value"}
    job_id = create(client, admin, headers=headers)
    shown = client.get(f"/api/schedules/{job_id}", headers=admin).json()
    assert shown["headers"] == headers
    listed = client.get("/api/schedules", headers=admin).text
    assert value not in listed and value not in json.dumps(shown)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "select headers_ciphertext from schedules.jobs where id = %s", (job_id,)
        ).fetchone()
    assert row is not None
    assert row[0].startswith("v1:") and "literal-header-value" not in row[0] and key not in row[0]


def test_only_admins(client: TestClient, admin: dict[str, str]) -> None:
    job_id = create(client, admin)
    user = user_headers(client, str(uuid.uuid4()), "someone@example.com")
    calls = [
        ("GET", "/api/schedules", None),
        ("POST", "/api/schedules", schedule()),
        ("GET", "/api/schedules/config", None),
        ("PATCH", "/api/schedules/config", {"retentionDays": 1}),
        ("GET", f"/api/schedules/{job_id}", None),
        ("PATCH", f"/api/schedules/{job_id}", {"isActive": False}),
        ("DELETE", f"/api/schedules/{job_id}", None),
        ("GET", f"/api/schedules/{job_id}/logs", None),
    ]
    for method, path, body in calls:
        nobody = client.request(method, path, json=body)
        assert nobody.status_code == 401, (method, path, nobody.text)
        assert nobody.json()["error"] == "AUTH_INVALID_CREDENTIALS", (method, path)
        for headers, status in ((anon_headers(client), 401), (user, 403)):
            refused = client.request(method, path, json=body, headers=headers)
            assert refused.status_code == status, (method, path, refused.text)
    still = client.get(f"/api/schedules/{job_id}", headers=admin).json()
    assert still["isActive"] is True
    assert client.get("/api/schedules/config", headers=admin).json()["retentionDays"] != 1


def test_config(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    assert client.get("/api/schedules/config", headers=admin).json() == {"retentionDays": 7}
    try:
        for bad in ({"retentionDays": 0}, {"retentionDays": "7"}, {"retentionDays": 1.5}, {}, {"days": 3}):
            refused = client.patch("/api/schedules/config", json=bad, headers=admin)
            assert refused.status_code == 400 and refused.json()["error"] == "INVALID_INPUT", bad
        assert client.get("/api/schedules/config", headers=admin).json() == {"retentionDays": 7}
        job_id = create(client, admin)
        with psycopg.connect(database_url) as conn:
            conn.execute(
                "insert into schedules.job_logs "
                "(job_id, executed_at, status_code, success, duration_ms, message) values "
                "(%s, now() - interval '3 days', 200, true, 5, 'Success'), "
                "(%s, now() - interval '1 hour', 200, true, 5, 'Success')",
                (job_id, job_id),
            )
        changed = client.patch("/api/schedules/config", json={"retentionDays": 2}, headers=admin)
        assert changed.status_code == 200
        assert changed.json() == {"message": "Schedules config updated successfully"}
        assert client.get("/api/schedules/config", headers=admin).json() == {"retentionDays": 2}
        kept = client.get(f"/api/schedules/{job_id}/logs", headers=admin).json()
        assert kept["totalCount"] == 1  # the 3-day-old run is gone at once
        assert kept["logs"][0]["success"] is True and kept["logs"][0]["durationMs"] == 5
        forever = client.patch("/api/schedules/config", json={"retentionDays": None}, headers=admin)
        assert forever.status_code == 200
        assert client.get("/api/schedules/config", headers=admin).json() == {"retentionDays": None}
    finally:
        client.patch("/api/schedules/config", json={"retentionDays": 7}, headers=admin)


def test_changes_are_audited_without_header_values(client: TestClient, admin: dict[str, str]) -> None:
    job_id = create(client, admin, headers={"X-Api-Key": "literal-do-not-log"})
    client.patch(f"/api/schedules/{job_id}", json={"isActive": False}, headers=admin)
    client.post("/api/schedules", json=schedule(name="no"), headers=admin)
    client.delete(f"/api/schedules/{job_id}", headers=admin)
    entries = client.get(
        "/api/logs/audits", params={"module": "SCHEDULES", "limit": 1000}, headers=admin
    ).json()
    mine = [(e["action"], e["outcome"]) for e in entries if e["details"].get("id") == job_id]
    assert ("CREATE_SCHEDULE", "success") in mine
    assert ("UPDATE_SCHEDULE", "success") in mine
    assert ("DELETE_SCHEDULE", "success") in mine
    assert any(e["action"] == "CREATE_SCHEDULE" and e["outcome"] == "refused" for e in entries)
    created = next(
        e for e in entries if e["action"] == "CREATE_SCHEDULE" and e["details"].get("id") == job_id
    )
    assert created["details"]["headerNames"] == ["X-Api-Key"]
    assert "literal-do-not-log" not in json.dumps(entries)


def test_agents_create_with_write_scope_and_their_deletes_wait(
    client: TestClient, admin: dict[str, str]
) -> None:
    reader = agent_headers(client, admin, ["schedules:read"])
    writer = agent_headers(client, admin, ["schedules:write"])
    assert client.get("/api/schedules", headers=reader).status_code == 200
    assert client.post("/api/schedules", json=schedule(), headers=reader).status_code == 403
    made = json.loads(
        mcp_call(
            client,
            writer,
            "create-schedule",
            {"name": "agent job", "cronSchedule": "0 9 * * 1", "functionUrl": TARGET},
        )
    )
    job_id = made["id"]
    listed = json.loads(mcp_call(client, writer, "list-schedules", {}))
    assert job_id in [row["id"] for row in listed["schedules"]]
    off = json.loads(mcp_call(client, writer, "update-schedule", {"id": job_id, "isActive": False}))
    assert off["message"] == "Schedule updated successfully"
    logs = json.loads(mcp_call(client, writer, "get-schedule-logs", {"id": job_id}))
    assert logs["totalCount"] == 0

    held = client.delete(f"/api/schedules/{job_id}", headers=writer)
    assert held.status_code == 202, held.text
    assert held.json()["status"] == "pending_approval"
    over_mcp = json.loads(mcp_call(client, writer, "delete-schedule", {"id": job_id}))
    assert over_mcp["status"] == "pending_approval"
    assert client.get(f"/api/schedules/{job_id}", headers=admin).status_code == 200
    approved = client.post(f"/api/approvals/{held.json()['changeRequestId']}/approve", headers=admin, json={})
    assert approved.status_code == 200, approved.text
    assert client.get(f"/api/schedules/{job_id}", headers=admin).status_code == 404


def test_an_agent_that_may_not_read_secrets_may_not_send_them(
    client: TestClient, admin: dict[str, str]
) -> None:
    """`${{secrets.KEY}}` in a header sends the value to the schedule's URL: an agent key without
    secrets:read may neither put one there nor move a schedule that sends one elsewhere. One with it may."""
    key = f"SCHED_{secrets.token_hex(4).upper()}"
    made = client.post("/api/secrets", headers=admin, json={"key": key, "value": "do-not-send"})
    assert made.status_code == 201, made.text
    placeholder = {"Authorization": f"Bearer ${{{{secrets.{key}}}}}"}
    writer = agent_headers(client, admin, ["schedules:write"])
    trusted = agent_headers(client, admin, ["schedules:write", "secrets:read"])
    before = count_of(client, admin)

    refused = client.post("/api/schedules", json=schedule(headers=placeholder), headers=writer)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "FORBIDDEN" and key in refused.json()["message"]
    assert "secrets:read" in refused.json()["nextActions"]
    assert count_of(client, admin) == before  # nothing was made

    sending = create(client, admin, headers=placeholder)  # a person's schedule that sends the secret
    moved = client.patch(
        f"/api/schedules/{sending}", json={"functionUrl": "https://attacker.example/x"}, headers=writer
    )
    assert moved.status_code == 403, moved.text
    assert client.get(f"/api/schedules/{sending}", headers=admin).json()["functionUrl"] == TARGET
    added = client.patch(
        f"/api/schedules/{create(client, admin)}", json={"headers": placeholder}, headers=writer
    )
    assert added.status_code == 403, added.text
    # What does not send a secret elsewhere stays open: its name, its cadence, switching it off.
    renamed = client.patch(
        f"/api/schedules/{sending}", json={"name": "renamed", "isActive": False}, headers=writer
    )
    assert renamed.status_code == 200, renamed.text

    assert (
        client.post("/api/schedules", json=schedule(headers=placeholder), headers=trusted).status_code == 201
    )


def count_of(client: TestClient, admin: dict[str, str]) -> int:
    return len(client.get("/api/schedules", headers=admin).json())
