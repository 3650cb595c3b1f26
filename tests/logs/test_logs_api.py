"""`/api/logs`: the audit trail in InsForge's shape and headers, its statistics, the log sources, and
`/api/usage/mcp` (each tool call the MCP server reports lands in the audit log)."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.config import Settings
from tests.support.app import admin_headers, agent_headers, anon_headers


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


def _report(client: TestClient, admin: dict[str, str], tool: str, success: bool = True) -> None:
    response = client.post("/api/usage/mcp", json={"tool_name": tool, "success": success}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}


def test_audits_are_a_bare_array_with_content_range(client: TestClient, admin: dict[str, str]) -> None:
    tool = f"tool-{secrets.token_hex(4)}"
    for _ in range(3):
        _report(client, admin, tool)
    everything = client.get("/api/logs/audits?module=MCP&limit=1000", headers=admin)
    assert everything.status_code == 200
    total = len(everything.json())
    assert everything.headers["content-range"] == f"0-{total - 1}/{total}"
    page = client.get("/api/logs/audits?module=MCP&limit=2&offset=1", headers=admin)
    assert page.status_code == 206
    assert page.headers["content-range"] == f"1-2/{total}"
    assert page.headers["preference-applied"] == "count=exact"
    entry = page.json()[0]
    assert set(entry) >= {"id", "actor", "action", "module", "details", "ipAddress", "createdAt", "updatedAt"}


def test_module_filter_is_case_insensitive(client: TestClient, admin: dict[str, str]) -> None:
    tool = f"case-{secrets.token_hex(4)}"
    _report(client, admin, tool)
    for spelling in ("MCP", "mcp", "Mcp"):
        rows = client.get(f"/api/logs/audits?module={spelling}&limit=1000", headers=admin).json()
        assert tool in {row["details"]["toolName"] for row in rows}


def test_mcp_usage_is_recorded_with_its_outcome(client: TestClient, admin: dict[str, str]) -> None:
    tool = f"fails-{secrets.token_hex(4)}"
    _report(client, admin, tool, success=False)
    rows = client.get("/api/logs/audits?action=MCP_TOOL_CALL&limit=1000", headers=admin).json()
    mine = [row for row in rows if row["tool"] == tool]
    assert len(mine) == 1
    assert mine[0]["outcome"] == "failed" and mine[0]["actor"] == "api-key"
    assert mine[0]["details"] == {"toolName": tool, "success": False}
    failed = client.get("/api/usage/mcp?success=false&limit=1000", headers=admin).json()["records"]
    assert tool in {record["tool_name"] for record in failed}


def test_mcp_usage_needs_the_api_key_and_a_tool_name(client: TestClient, admin: dict[str, str]) -> None:
    anon = anon_headers(client)
    assert client.post("/api/usage/mcp", json={"tool_name": "x"}, headers=anon).status_code == 401
    response = client.post("/api/usage/mcp", json={"success": True}, headers=admin)
    assert response.status_code == 400 and response.json()["message"] == "tool_name is required"


def test_audit_stats(client: TestClient, admin: dict[str, str]) -> None:
    _report(client, admin, f"stats-{secrets.token_hex(4)}")
    stats = client.get("/api/logs/audits/stats?days=1", headers=admin).json()
    assert stats["totalLogs"] >= 1 and stats["uniqueActors"] >= 1
    assert stats["actionsByModule"]["MCP"] >= 1
    assert 1 <= len(stats["recentActivity"]) <= 10


def test_sources(client: TestClient, admin: dict[str, str]) -> None:
    names = [s["name"] for s in client.get("/api/logs/sources", headers=admin).json()]
    assert names == ["insforge.logs", "postgREST.logs", "postgres.logs", "function.logs"]


def test_request_log_shows_requests_without_secrets(client: TestClient, admin: dict[str, str]) -> None:
    marker = f"marker_{secrets.token_hex(4)}"
    api_key = admin["Authorization"].removeprefix("Bearer ")
    client.get(f"/api/database/records/{marker}?apikey={api_key}", headers=admin)
    client.get(f"/api/auth/{marker}/{api_key}")
    logs = client.get(f"/api/logs/insforge.logs?q={marker}", headers=admin).json()
    assert logs["total"] == 2
    messages = [line["eventMessage"] for line in logs["logs"]]
    assert messages[0].startswith(f"GET /api/database/records/{marker} 404")
    assert all(api_key not in message for message in messages)
    assert all(api_key not in str(line["body"]) for line in logs["logs"])
    records = client.get(f"/api/logs/postgREST.logs?q={marker}", headers=admin).json()
    assert [line["body"]["path"] for line in records["logs"]] == [f"/api/database/records/{marker}"]
    assert records["logs"][0]["source"] == "postgREST.logs"


def test_request_log_limit_and_time_range(client: TestClient, admin: dict[str, str]) -> None:
    marker = f"range_{secrets.token_hex(4)}"
    for number in range(5):
        client.get(f"/api/nothing/{marker}/{number}")
    logs = client.get(f"/api/logs/insforge.logs?q={marker}&limit=2", headers=admin).json()["logs"]
    assert [line["body"]["path"] for line in logs] == [f"/api/nothing/{marker}/3", f"/api/nothing/{marker}/4"]
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = client.get(f"/api/logs/insforge.logs?q={marker}&start_time={future}", headers=admin).json()
    assert later == {"logs": [], "total": 0}
    earlier = client.get(
        f"/api/logs/insforge.logs?q={marker}&before_timestamp={future}", headers=admin
    ).json()
    assert earlier["total"] == 5


def test_postgres_logs_without_a_log_file_show_activity(client: TestClient, admin: dict[str, str]) -> None:
    logs = client.get("/api/logs/postgres.logs?limit=50", headers=admin).json()
    assert logs["total"] >= 1
    assert all(line["source"] == "postgres.logs" for line in logs["logs"])


def test_postgres_log_file_is_read_and_scrubbed(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    folder = settings.data_dir / "log"
    folder.mkdir(exist_ok=True)
    (folder / "postgres.log").write_text(
        "2026-12-04 10:00:00.123 UTC [41] LOG:  database system is ready to accept connections\n"
        '2026-12-04 10:00:01.000 UTC [42] ERROR:  relation "nope" does not exist\n'
        "2026-12-04 10:00:01.000 UTC [42] STATEMENT:  select * from nope\n"
        "2026-12-04 10:00:02.000 UTC [43] LOG:  statement: alter role x password 'hunter2'\n"
    )
    try:
        logs = client.get("/api/logs/postgres.logs", headers=admin).json()["logs"]
        assert len(logs) == 4
        assert logs[0]["timestamp"] == "2026-12-04T10:00:00.123000Z"
        assert "hunter2" not in str(logs)
        found = client.get("/api/logs/postgres.logs?q=does%20not%20exist", headers=admin).json()
        assert found["total"] == 1
        assert client.get("/api/logs/sources", headers=admin).json()[2]["token"] == "postgres.log"
    finally:
        (folder / "postgres.log").unlink()


def test_function_logs_are_empty_until_functions_exist(client: TestClient, admin: dict[str, str]) -> None:
    assert client.get("/api/logs/function.logs", headers=admin).json() == {"logs": [], "total": 0}


def test_unknown_source_and_bad_parameters(client: TestClient, admin: dict[str, str]) -> None:
    unknown = client.get("/api/logs/nginx.logs", headers=admin)
    assert unknown.status_code == 404 and "insforge.logs" in unknown.json()["nextActions"]
    assert client.get("/api/logs/insforge.logs?limit=0", headers=admin).status_code == 400
    assert client.get("/api/logs/insforge.logs?start_time=yesterday", headers=admin).status_code == 400
    assert client.get("/api/logs/insforge.logs", headers=anon_headers(client)).status_code == 401


def test_request_lines_are_written_without_a_reader_asking(client: TestClient, database_url: str) -> None:
    """The writer sleeps until a request comes, then writes its line a second later by itself (readers of
    the log flush first: this looks in the table directly)."""
    path = f"/api/auth/unread_{secrets.token_hex(4)}"
    client.get(path)
    with psycopg.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = conn.execute("select count(*) from system.request_logs where path = %s", (path,))
            if found.fetchone() == (1,):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the request's line was not written within 10 s")


def test_request_log_keeps_odd_paths_and_times(client: TestClient, admin: dict[str, str]) -> None:
    marker = f"odd_{secrets.token_hex(4)}"
    before = datetime.now(UTC) - timedelta(seconds=5)
    client.get(f"/api/nothing/{marker}%09tab%0Anewline%5Cbackslash")
    line = client.get(f"/api/logs/insforge.logs?q={marker}", headers=admin).json()["logs"][0]
    assert line["body"]["path"] == f"/api/nothing/{marker}\ttab\nnewline\\backslash"
    moment = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
    assert before <= moment <= datetime.now(UTC) + timedelta(seconds=5)


def test_search_across_sources_and_stats(client: TestClient, admin: dict[str, str]) -> None:
    marker = f"search_{secrets.token_hex(4)}"
    for number in range(3):
        client.get(f"/api/database/records/{marker}_{number}", headers=admin)
    found = client.get(f"/api/logs/search?q={marker}&limit=2", headers=admin)
    # Each request is in insforge.logs and, being a records request, in postgREST.logs: 6 lines.
    assert found.status_code == 206 and found.headers["content-range"] == "0-1/6"
    assert [line["body"]["path"] for line in found.json()] == [f"/api/database/records/{marker}_2"] * 2
    one_source = client.get(f"/api/logs/search?q={marker}&source=postgREST.logs", headers=admin).json()
    assert {line["source"] for line in one_source} == {"postgREST.logs"} and len(one_source) == 3
    assert client.get("/api/logs/search", headers=admin).status_code == 400
    stats = {row["source"]: row for row in client.get("/api/logs/stats", headers=admin).json()}
    assert set(stats) == {"insforge.logs", "postgREST.logs", "postgres.logs", "function.logs"}
    assert stats["insforge.logs"]["count"] >= 3 and stats["insforge.logs"]["lastActivity"]
    assert stats["function.logs"] == {"source": "function.logs", "count": 0, "lastActivity": None}


def test_an_agent_key_cannot_prune_the_audit_trail(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    """The audit trail is how people review (and replay) what agents did: no agent key may erase it, whatever
    its scopes; the API key still can."""
    marker = f"OLD_{secrets.token_hex(4)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "insert into system.audit_logs (actor, action, module, details, created_at) "
            "values ('agent:someone', %s, 'DATABASE', '{}', now() - interval '30 days')",
            (marker,),
        )
    agent = agent_headers(client, admin, ["*:write"])
    refused = client.delete("/api/logs/audits", params={"days_to_keep": 1}, headers=agent)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "FORBIDDEN"
    assert refused.json()["nextActions"]
    kept = client.get("/api/logs/audits", params={"action": marker}, headers=admin).json()
    assert [row["action"] for row in kept] == [marker]

    pruned = client.delete("/api/logs/audits", params={"days_to_keep": 1}, headers=admin)
    assert pruned.status_code == 200, pruned.text
    assert client.get("/api/logs/audits", params={"action": marker}, headers=admin).json() == []
