"""Approvals: an agent's high-risk tool call becomes a change request that a person decides; approval runs
exactly the stored call once, as the agent; people's own calls are never held."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest

from tests.mcp_server.test_mcp_server import agent_key, call, http_client, table_name, text_of
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.anyio


def admin_api(
    server: ServerProcess, keys: dict[str, str], method: str, path: str, **kwargs: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {kwargs.pop('credential', keys['apiKey'])}"}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=30, **kwargs)


async def make_table(server: ServerProcess, keys: dict[str, str], rows: int = 0) -> str:
    name = table_name()
    async with http_client(server, keys["apiKey"]) as client:
        await call(client, "run-raw-sql", {"query": f"create table {name} (id int)"})
        if rows:
            await call(
                client, "run-raw-sql", {"query": f"insert into {name} select generate_series(1, {rows})"}
            )
    return name


def raw_sql(server: ServerProcess, keys: dict[str, str], query: str, credential: str) -> httpx.Response:
    """`POST /api/database/advance/rawsql` with `credential`."""
    return admin_api(
        server, keys, "POST", "/api/database/advance/rawsql", json={"query": query}, credential=credential
    )


def tables(server: ServerProcess, keys: dict[str, str]) -> list[str]:
    found: list[str] = admin_api(server, keys, "GET", "/api/database/tables").json()
    return found


async def held_drop(server: ServerProcess, keys: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    """A new table, and an agent key whose call to drop it is held: (the table, the key, the held answer)."""
    name = await make_table(server, keys)
    agent = agent_key(server, keys["apiKey"], ["database:write"])
    async with http_client(server, agent) as client:
        held = await call(client, "delete-table", {"tableName": name})
    assert held["status"] == "pending_approval"
    return name, agent, held


async def test_an_agents_drop_of_a_table_that_is_not_there_fails_at_once(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """Nothing would be dropped, so no one is asked: the call is the API's 404, and no request is made."""
    name = table_name()
    agent = agent_key(live_server, live_keys["apiKey"], ["database:write"])
    async with http_client(live_server, agent) as client:
        result = await client.call_tool("delete-table", {"tableName": name})
    assert result.is_error and "DATABASE_NOT_FOUND" in text_of(result)
    requests = admin_api(live_server, live_keys, "GET", "/api/approvals").json()
    assert [r for r in requests if r["arguments"] == {"tableName": name}] == []


async def test_an_agents_drop_waits_for_approval_then_runs_once(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    name, agent, held = await held_drop(live_server, live_keys)
    assert name in held["reason"]
    assert name in tables(live_server, live_keys)  # nothing ran

    pending = admin_api(live_server, live_keys, "GET", "/api/approvals", params={"status": "pending"}).json()
    [request] = [r for r in pending if r["id"] == held["changeRequestId"]]
    assert request["tool"] == "delete-table"
    assert request["arguments"] == {"tableName": name}
    assert request["requestedBy"].startswith("agent:")

    approved = admin_api(live_server, live_keys, "POST", f"/api/approvals/{request['id']}/approve", json={})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "done"
    assert name not in tables(live_server, live_keys)

    async with http_client(live_server, agent) as client:
        polled = await call(client, "get-change-request", {"changeRequestId": request["id"]})
    assert polled["status"] == "done"
    assert polled["decidedBy"] == "api-key"
    again = admin_api(live_server, live_keys, "POST", f"/api/approvals/{request['id']}/approve", json={})
    assert again.status_code == 409
    assert again.json()["error"] == "ALREADY_DECIDED"


async def test_an_approved_call_that_fails_keeps_the_apis_whole_error(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    name, _agent, held = await held_drop(live_server, live_keys)
    # A person drops the table first; the agent's stored call then fails when it is approved.
    dropped = admin_api(live_server, live_keys, "DELETE", f"/api/database/tables/{name}")
    assert dropped.status_code == 200, dropped.text
    approved = admin_api(
        live_server, live_keys, "POST", f"/api/approvals/{held['changeRequestId']}/approve", json={}
    )
    assert approved.status_code == 200, approved.text
    decided = approved.json()
    assert decided["status"] == "failed"
    error = decided["result"]
    assert error["statusCode"] == 404 and error["error"] and error["message"]
    assert error["nextActions"]  # what the agent can do next, as the API would have said it


async def test_a_rejected_delete_without_where_changes_nothing(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    name = await make_table(live_server, live_keys, rows=3)
    agent = agent_key(live_server, live_keys["apiKey"], ["database:write"])
    async with http_client(live_server, agent) as client:
        held = await call(client, "run-raw-sql", {"query": f"delete from {name}"})
        assert held["status"] == "pending_approval"
        assert "without WHERE" in held["reason"]
        safe = await call(client, "run-raw-sql", {"query": f"delete from {name} where id = 1"})
        assert safe["rowCount"] == 1  # not held: it has a WHERE
    rejected = admin_api(
        live_server,
        live_keys,
        "POST",
        f"/api/approvals/{held['changeRequestId']}/reject",
        json={"note": "no"},
    )
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["decisionNote"] == "no"
    async with http_client(live_server, live_keys["apiKey"]) as client:
        left = await call(client, "run-raw-sql", {"query": f"select count(*)::int as n from {name}"})
    assert left["rows"] == [{"n": 2}]


async def test_people_are_never_held(live_server: ServerProcess, live_keys: dict[str, str]) -> None:
    name = await make_table(live_server, live_keys)
    async with http_client(live_server, live_keys["apiKey"]) as client:
        dropped = await call(client, "delete-table", {"tableName": name})
    assert "status" not in dropped or dropped["status"] != "pending_approval"
    assert name not in tables(live_server, live_keys)


async def test_who_may_decide(live_server: ServerProcess, live_keys: dict[str, str]) -> None:
    name = await make_table(live_server, live_keys)
    requester_response = httpx.post(
        f"{live_server.url}/api/agents/keys",
        json={"name": f"req-{uuid.uuid4().hex[:6]}", "scopes": ["database:write"], "canApprove": True},
        headers={"Authorization": f"Bearer {live_keys['apiKey']}"},
    ).json()
    requester = requester_response["key"]
    plain = agent_key(live_server, live_keys["apiKey"], ["*:write"])
    approver = httpx.post(
        f"{live_server.url}/api/agents/keys",
        json={"name": f"appr-{uuid.uuid4().hex[:6]}", "scopes": ["*:read"], "canApprove": True},
        headers={"Authorization": f"Bearer {live_keys['apiKey']}"},
    ).json()["key"]
    async with http_client(live_server, requester) as client:
        held = await call(client, "delete-table", {"tableName": name})
    path = f"/api/approvals/{held['changeRequestId']}/approve"
    assert admin_api(live_server, live_keys, "POST", path, json={}, credential=plain).status_code == 403
    assert admin_api(live_server, live_keys, "POST", path, json={}, credential=requester).status_code == 403
    assert (
        admin_api(live_server, live_keys, "POST", path, json={}, credential=live_keys["anonKey"]).status_code
        == 401
    )
    decided = admin_api(live_server, live_keys, "POST", path, json={}, credential=approver)
    assert decided.status_code == 200
    assert decided.json()["status"] == "done"


def test_bad_approval_requests(live_server: ServerProcess, live_keys: dict[str, str]) -> None:
    assert (
        admin_api(live_server, live_keys, "GET", "/api/approvals", params={"status": "nope"}).status_code
        == 400
    )
    missing = admin_api(live_server, live_keys, "POST", f"/api/approvals/{uuid.uuid4()}/approve", json={})
    assert missing.status_code == 404
    assert (
        admin_api(
            live_server, live_keys, "GET", "/api/approvals", credential=live_keys["anonKey"]
        ).status_code
        == 401
    )


async def test_the_cli_lists_and_approves(live_server: ServerProcess, live_keys: dict[str, str]) -> None:
    name = await make_table(live_server, live_keys)
    agent = agent_key(live_server, live_keys["apiKey"], ["database:write"])
    async with http_client(live_server, agent) as client:
        held = await call(client, "delete-table", {"tableName": name})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "kilnbase", "approvals", *args]
        command += ["--data-dir", str(live_server.data_dir), "--url", live_server.url]
        return subprocess.run(
            command, capture_output=True, text=True, env=live_server.env, timeout=60, check=False
        )

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert held["changeRequestId"] in listed.stderr
    approved = cli("approve", held["changeRequestId"])
    assert approved.returncode == 0, approved.stderr
    assert approved.stderr.startswith("done")
    assert name not in tables(live_server, live_keys)
    again = cli("approve", held["changeRequestId"])
    assert again.returncode == 1
    assert "not pending" in again.stderr


async def test_an_agents_high_risk_rest_request_is_held_too(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    name = await make_table(live_server, live_keys, rows=2)
    agent = agent_key(live_server, live_keys["apiKey"], ["database:write"])
    drop = raw_sql(live_server, live_keys, f"drop table {name}", agent)
    assert drop.status_code == 202
    assert drop.json()["status"] == "pending_approval"
    delete = admin_api(live_server, live_keys, "DELETE", f"/api/database/tables/{name}", credential=agent)
    assert delete.status_code == 202
    assert name in tables(live_server, live_keys)  # nothing ran
    safe = admin_api(
        live_server,
        live_keys,
        "POST",
        "/api/database/advance/rawsql",
        json={"query": f"select count(*)::int as n from {name}"},
        credential=agent,
    )
    assert safe.status_code == 200 and safe.json()["rows"] == [{"n": 2}]
    person = admin_api(
        live_server, live_keys, "POST", "/api/database/advance/rawsql", json={"query": f"delete from {name}"}
    )
    assert person.status_code == 200  # a person's call is never held
    approved = admin_api(
        live_server, live_keys, "POST", f"/api/approvals/{drop.json()['changeRequestId']}/approve", json={}
    )
    assert approved.json()["status"] == "done", approved.text
    assert name not in tables(live_server, live_keys)


def requests_about(server: ServerProcess, keys: dict[str, str], name: str) -> list[dict[str, Any]]:
    """Every change request, whatever its status, whose arguments name `name`."""
    found: list[dict[str, Any]] = admin_api(server, keys, "GET", "/api/approvals").json()
    return [r for r in found if name in str(r["arguments"])]


async def test_an_agent_cannot_ask_for_what_its_scopes_deny(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    name = await make_table(live_server, live_keys)
    reader = agent_key(live_server, live_keys["apiKey"], ["*:read"])
    delete = admin_api(live_server, live_keys, "DELETE", f"/api/database/tables/{name}", credential=reader)
    drop = raw_sql(live_server, live_keys, f"drop table {name}", reader)
    for refused in (delete, drop):
        assert refused.status_code == 403, refused.text
        body = refused.json()
        assert body["error"] == "FORBIDDEN"
        assert "database:write" in body["message"] and body["nextActions"]
    assert requests_about(live_server, live_keys, name) == []  # nothing for a person to approve
    assert name in tables(live_server, live_keys)


async def test_an_approval_runs_nothing_the_agent_may_no_longer_do(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    name, _agent, held = await held_drop(live_server, live_keys)
    settings = "/api/agents/settings"
    assert admin_api(live_server, live_keys, "PUT", settings, json={"readOnly": True}).status_code == 200
    try:
        approved = admin_api(
            live_server, live_keys, "POST", f"/api/approvals/{held['changeRequestId']}/approve", json={}
        )
    finally:
        admin_api(live_server, live_keys, "PUT", settings, json={"readOnly": False})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "failed"
    assert approved.json()["result"]["error"] == "AGENT_READ_ONLY"
    assert name in tables(live_server, live_keys)


async def test_an_agent_key_reads_only_its_own_change_requests(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """Another key's request may carry, in its arguments and result, what this key's scopes do not reach."""
    _name, _owner, theirs = await held_drop(live_server, live_keys)
    _name, snooper, mine = await held_drop(live_server, live_keys)
    their_id, my_id = theirs["changeRequestId"], mine["changeRequestId"]

    listed = admin_api(live_server, live_keys, "GET", "/api/approvals", credential=snooper)
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json()] == [my_id]
    one = admin_api(live_server, live_keys, "GET", f"/api/approvals/{their_id}", credential=snooper)
    assert one.status_code == 404 and "tableName" not in one.text
    async with http_client(live_server, snooper) as client:
        assert [r["id"] for r in await call(client, "list-change-requests", {})] == [my_id]
        result = await client.call_tool("get-change-request", {"changeRequestId": their_id})
        assert result.is_error and "tableName" not in text_of(result)
        assert (await call(client, "get-change-request", {"changeRequestId": my_id}))["id"] == my_id

    everyone = {r["id"] for r in admin_api(live_server, live_keys, "GET", "/api/approvals").json()}
    assert {their_id, my_id} <= everyone  # a person with admin rights reads all
