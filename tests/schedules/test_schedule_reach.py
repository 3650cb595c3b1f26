"""Where an agent key's schedules may call: public addresses and the project's own URL, checked when the agent
sets the URL (403, nothing stored, audited) and again at each run, to the address actually dialled (DNS
rebinding). A person's schedules call anywhere, as InsForge's do.

The project's URL (`public_url`) is the loopback test target here, so that "own URL" calls can be seen."""

from __future__ import annotations

import ipaddress
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.config import Settings
from kilnbase.schedules.reach import is_public
from tests.support.app import admin_headers, agent_headers, mcp_call
from tests.support.http_target import HttpTarget


@pytest.fixture(scope="module")
def target() -> Iterator[HttpTarget]:
    with HttpTarget() as server:
        yield server


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory, target: HttpTarget) -> Settings:
    data_dir = tmp_path_factory.mktemp("data")
    return Settings(database_url=database_url, data_dir=data_dir, public_url=target.url)


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


@pytest.fixture(scope="module")
def agent(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    return agent_headers(client, admin, ["schedules:write"])


def schedule(url: str) -> dict[str, Any]:
    return {
        "name": f"reach-{secrets.token_hex(3)}",
        "cronSchedule": "* * * * *",
        "functionUrl": url,
        "httpMethod": "GET",
    }


def where() -> str:
    return f"/ok/{secrets.token_hex(4)}"


def jobs(client: TestClient, admin: dict[str, str]) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = client.get("/api/schedules", headers=admin).json()
    return listed


def make_due(database_url: str, job_id: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("update schedules.jobs set next_run_at = now() where id = %s", (job_id,))


def run_log(client: TestClient, admin: dict[str, str], job_id: str, count: int = 1) -> dict[str, Any]:
    """The job's newest log row, once it has `count` of them."""
    deadline = time.monotonic() + 10
    while True:
        page = client.get(f"/api/schedules/{job_id}/logs", headers=admin).json()
        if page["totalCount"] >= count:
            newest: dict[str, Any] = page["logs"][0]
            return newest
        assert time.monotonic() < deadline, page
        time.sleep(0.05)


INTERNAL = [
    "http://127.0.0.1:9/x",
    "http://10.1.2.3/x",
    "http://169.254.169.254/latest/meta-data/",
    "http://192.168.0.1/",
    "http://[::1]:8080/x",
    "http://[fd00::1]/x",
    "http://[::ffff:127.0.0.1]/x",  # (IPv4-mapped)
    "http://[2002:a9fe:a9fe::]/x",  # (6to4, carrying 169.254.169.254)
    "http://0.0.0.0:9/x",
    "http://localhost:9/x",  # (a name that resolves to loopback)
    "http://2130706433/x",  # (127.0.0.1 as one number: the resolver reads it so)
]


@pytest.mark.parametrize("url", INTERNAL)
def test_an_agent_may_not_point_a_schedule_at_an_internal_address(
    client: TestClient, admin: dict[str, str], agent: dict[str, str], url: str
) -> None:
    before = len(jobs(client, admin))
    refused = client.post("/api/schedules", json=schedule(url), headers=agent)
    assert refused.status_code == 403, refused.text
    body = refused.json()
    assert body["error"] == "FORBIDDEN" and body["statusCode"] == 403
    assert "not a public address" in body["message"] and "own URL" in body["message"], body
    assert "public URL" in body["nextActions"] and "project admin" in body["nextActions"]
    assert len(jobs(client, admin)) == before  # nothing was made


def test_the_refusal_is_audited_and_said_over_mcp_too(
    client: TestClient, admin: dict[str, str], agent: dict[str, str]
) -> None:
    name = f"metadata-{secrets.token_hex(3)}"
    over_mcp = mcp_call(
        client,
        agent,
        "create-schedule",
        {"name": name, "cronSchedule": "0 * * * *", "functionUrl": "http://169.254.169.254/latest/"},
    )
    assert "169.254.169.254 (link-local), not a public address" in over_mcp, over_mcp
    entries = client.get(
        "/api/logs/audits", params={"module": "SCHEDULES", "limit": 1000}, headers=admin
    ).json()
    refused = [e for e in entries if e["action"] == "CREATE_SCHEDULE" and e["details"].get("name") == name]
    assert [e["outcome"] for e in refused] == ["refused"], refused
    assert "not a public address" in refused[0]["details"]["error"]


def test_an_agent_may_move_its_schedule_only_within_reach(
    client: TestClient, admin: dict[str, str], agent: dict[str, str]
) -> None:
    made = client.post("/api/schedules", json=schedule("https://example.com/hook"), headers=agent)
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    moved = client.patch(f"/api/schedules/{job_id}", json={"functionUrl": "http://10.0.0.8/"}, headers=agent)
    assert moved.status_code == 403, moved.text
    assert client.get(f"/api/schedules/{job_id}", headers=admin).json()["functionUrl"] == (
        "https://example.com/hook"
    )
    # A person's schedule may call anywhere; an agent may switch it off or rename it without moving it.
    internal = client.post("/api/schedules", json=schedule("http://10.0.0.8/"), headers=admin)
    assert internal.status_code == 201, internal.text
    renamed = client.patch(
        f"/api/schedules/{internal.json()['id']}", json={"name": "renamed by agent"}, headers=agent
    )
    assert renamed.status_code == 200, renamed.text


def test_an_agent_schedules_its_own_functions_at_the_projects_url(
    client: TestClient, admin: dict[str, str], agent: dict[str, str], target: HttpTarget, database_url: str
) -> None:
    """The project's URL (here the loopback target) is in reach whatever its address, as is a path."""
    path = where()
    made = client.post("/api/schedules", json=schedule(target.url + path), headers=agent)
    assert made.status_code == 201, made.text
    assert client.post("/api/schedules", json=schedule("/functions/report"), headers=agent).status_code == 201
    job_id = made.json()["id"]
    make_due(database_url, job_id)
    target.wait_for(path, 1)
    assert run_log(client, admin, job_id)["success"] is True


def test_the_run_checks_again_and_an_admin_setting_the_url_lifts_the_mark(
    client: TestClient, admin: dict[str, str], agent: dict[str, str], target: HttpTarget, database_url: str
) -> None:
    """The agent's URL passed its check when set; its name now resolves to loopback (DNS rebinding, played
    by editing the stored URL to `localhost`, which is not the project's URL `127.0.0.1`): the run does not
    call it, and its log says why. The same URL set by the admin is called."""
    made = client.post("/api/schedules", json=schedule("https://example.com/hook"), headers=agent)
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    path = where()
    rebound = target.url.replace("127.0.0.1", "localhost") + path
    with psycopg.connect(database_url) as conn:
        conn.execute("update schedules.jobs set function_url = %s where id = %s", (rebound, job_id))
    make_due(database_url, job_id)
    log = run_log(client, admin, job_id)
    assert log["success"] is False and log["statusCode"] == 500
    assert log["message"].startswith("Not called: an agent key set this schedule's URL"), log
    assert "localhost is 127.0.0.1 (loopback), not a public address" in log["message"], log
    assert target.to(path) == []

    set_by_admin = client.patch(f"/api/schedules/{job_id}", json={"functionUrl": rebound}, headers=admin)
    assert set_by_admin.status_code == 200, set_by_admin.text
    make_due(database_url, job_id)
    target.wait_for(path, 1)
    assert run_log(client, admin, job_id, 2)["success"] is True

    # The agent setting it again (to its own URL, in reach) marks it again: the run checks once more.
    again = client.patch(f"/api/schedules/{job_id}", json={"functionUrl": target.url + path}, headers=agent)
    assert again.status_code == 200, again.text
    with psycopg.connect(database_url) as conn:
        conn.execute("update schedules.jobs set function_url = %s where id = %s", (rebound, job_id))
    make_due(database_url, job_id)
    assert run_log(client, admin, job_id, 3)["message"].startswith("Not called")
    assert len(target.to(path)) == 1


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("100.64.0.1", False),  # (shared address space, carrier NAT)
        ("224.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("64:ff9b::a9fe:a9fe", False),  # (NAT64 of 169.254.169.254)
        ("::7f00:1", False),  # (IPv4-compatible 127.0.0.1)
        ("2002:7f00:1::", False),  # (6to4 of 127.0.0.1)
        ("64:ff9b:1::1", False),
        ("fe80::1", False),
    ],
)
def test_what_counts_as_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_no_secret_value_in_a_refused_runs_log(
    client: TestClient, admin: dict[str, str], target: HttpTarget, database_url: str
) -> None:
    trusted = agent_headers(client, admin, ["schedules:write", "secrets:read"])
    key = f"REACH_{secrets.token_hex(4).upper()}"
    value = f"v-{secrets.token_hex(8)}"
    assert client.post("/api/secrets", json={"key": key, "value": value}, headers=admin).status_code == 201
    body = {**schedule("https://example.com/hook"), "headers": {"X-Key": f"${{{{secrets.{key}}}}}"}}
    made = client.post("/api/schedules", json=body, headers=trusted)
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "update schedules.jobs set function_url = %s where id = %s",
            ("http://localhost:9/x", job_id),
        )
    make_due(database_url, job_id)
    log = run_log(client, admin, job_id)
    assert log["message"].startswith("Not called"), log
    assert value not in json.dumps(log)
