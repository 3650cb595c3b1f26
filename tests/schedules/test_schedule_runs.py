"""The runner, for real: schedules call a loopback HTTP server with their method, headers (a secret put in
at the run, never shown by the API) and body, and log each run; switched off or deleted, they stop; a
failing target (500, connection refused, too slow) is logged as failed and the runner goes on; two app
instances on one database make a due run once.

A job is made due by setting its `next_run_at` in the database (the runners are woken by the trigger's
NOTIFY), or runs on its own with the "N seconds" form."""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import SchedulesSettings, Settings
from tests.support.app import admin_headers
from tests.support.http_target import HttpTarget

#: A scheduled call's time limit in this module: the slow target answers after 3 s.
TIMEOUT_SECONDS = 1.0


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        schedules=SchedulesSettings(request_timeout_seconds=TIMEOUT_SECONDS, connect_timeout_seconds=1.0),
    )


@pytest.fixture(scope="module")
def target() -> Iterator[HttpTarget]:
    with HttpTarget(slow_seconds=3.0) as server:
        yield server


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


def path(kind: str = "ok") -> str:
    return f"/{kind}/{secrets.token_hex(4)}"


def create(client: TestClient, admin: dict[str, str], **fields: Any) -> str:
    body = {
        "name": f"run-{secrets.token_hex(3)}",
        "cronSchedule": "* * * * *",
        "httpMethod": "POST",
        **fields,
    }
    created = client.post("/api/schedules", json=body, headers=admin)
    assert created.status_code == 201, created.text
    job_id: str = created.json()["id"]
    return job_id


def make_due(database_url: str, *job_ids: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "update schedules.jobs set next_run_at = now() where id = any(%s::uuid[])", (list(job_ids),)
        )


def logs_of(client: TestClient, admin: dict[str, str], job_id: str, count: int) -> list[dict[str, Any]]:
    """The job's log rows, once there are `count` of them (the row is written just after the call)."""
    deadline = time.monotonic() + 10
    while True:
        page = client.get(f"/api/schedules/{job_id}/logs", headers=admin).json()
        if page["totalCount"] >= count:
            logs: list[dict[str, Any]] = page["logs"]
            return logs
        assert time.monotonic() < deadline, page
        time.sleep(0.05)


def test_a_due_run_calls_the_target_with_method_headers_secret_and_body(
    client: TestClient, admin: dict[str, str], target: HttpTarget, database_url: str
) -> None:
    key = f"RUN_{secrets.token_hex(4).upper()}"
    value = f"s3cret-{secrets.token_hex(8)}"
    assert client.post("/api/secrets", json={"key": key, "value": value}, headers=admin).status_code == 201
    where = path()
    headers = {"Authorization": f"Bearer ${{{{secrets.{key}}}}}", "X-Plain": "plain"}
    job_id = create(
        client, admin, functionUrl=target.url + where, httpMethod="PUT", headers=headers, body={"n": 1}
    )
    make_due(database_url, job_id)
    [request] = target.wait_for(where, 1)
    assert request["method"] == "PUT"
    assert request["headers"]["authorization"] == f"Bearer {value}"
    assert request["headers"]["x-plain"] == "plain"
    assert request["headers"]["content-type"] == "application/json"
    assert json.loads(request["body"]) == {"n": 1}

    [log] = logs_of(client, admin, job_id, 1)
    assert log["scheduleId"] == job_id and log["statusCode"] == 200 and log["success"] is True
    assert log["message"] == "Success" and isinstance(log["durationMs"], int) and log["executedAt"]
    job = client.get(f"/api/schedules/{job_id}", headers=admin)
    assert job.json()["headers"] == headers and job.json()["lastExecutedAt"]
    assert job.json()["nextRun"] > log["executedAt"]  # moved on to the next minute
    everything = job.text + client.get(f"/api/schedules/{job_id}/logs", headers=admin).text
    everything += client.get("/api/schedules", headers=admin).text
    everything += json.dumps(client.get("/api/logs/audits", params={"limit": 1000}, headers=admin).json())
    assert value not in everything
    client.delete(f"/api/schedules/{job_id}", headers=admin)


def test_seconds_form_runs_by_itself_and_stops_when_switched_off_or_deleted(
    client: TestClient, admin: dict[str, str], target: HttpTarget
) -> None:
    where = path()
    job_id = create(client, admin, functionUrl=target.url + where, httpMethod="GET", cronSchedule="1 second")
    try:
        first = target.wait_for(where, 2, timeout=5)
        assert first[0]["method"] == "GET" and first[0]["body"] == b""
        assert (
            client.patch(f"/api/schedules/{job_id}", json={"isActive": False}, headers=admin).status_code
            == 200
        )
        time.sleep(0.3)  # (a run claimed just before finishes)
        stopped_at = len(target.to(where))
        time.sleep(1.5)
        assert len(target.to(where)) == stopped_at

        assert (
            client.patch(f"/api/schedules/{job_id}", json={"isActive": True}, headers=admin).status_code
            == 200
        )
        target.wait_for(where, stopped_at + 1, timeout=5)
    finally:
        assert client.delete(f"/api/schedules/{job_id}", headers=admin).status_code == 200
    time.sleep(0.3)
    deleted_at = len(target.to(where))
    time.sleep(1.5)
    assert len(target.to(where)) == deleted_at


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_failing_targets_are_logged_and_the_runner_goes_on(
    client: TestClient, admin: dict[str, str], target: HttpTarget, database_url: str
) -> None:
    failing = path("fail")
    slow = path("slow")
    jobs = {
        "500": create(client, admin, functionUrl=target.url + failing),
        "refused": create(client, admin, functionUrl=f"http://127.0.0.1:{closed_port()}/x"),
        "slow": create(client, admin, functionUrl=target.url + slow),
    }
    make_due(database_url, *jobs.values())
    [failed] = logs_of(client, admin, jobs["500"], 1)
    assert failed["success"] is False and failed["statusCode"] == 500 and failed["message"] == "HTTP 500"
    [refused] = logs_of(client, admin, jobs["refused"], 1)
    assert refused["success"] is False and refused["statusCode"] == 500
    assert refused["message"].startswith("Connection failed"), refused
    [late] = logs_of(client, admin, jobs["slow"], 1)
    assert late["success"] is False and "time limit (1 s)" in late["message"], late
    assert TIMEOUT_SECONDS * 1000 <= late["durationMs"] < 2900
    target.wait_for(failing, 1)
    target.wait_for(slow, 1)

    fine = path()
    after = create(client, admin, functionUrl=target.url + fine)
    make_due(database_url, after)
    target.wait_for(fine, 1)
    assert logs_of(client, admin, after, 1)[0]["success"] is True
    for job_id in (*jobs.values(), after):
        client.delete(f"/api/schedules/{job_id}", headers=admin)


def test_a_secret_deleted_after_create_fails_the_run_without_calling(
    client: TestClient, admin: dict[str, str], target: HttpTarget, database_url: str
) -> None:
    key = f"GONE_{secrets.token_hex(4).upper()}"
    client.post("/api/secrets", json={"key": key, "value": "soon-gone"}, headers=admin)
    where = path()
    job_id = create(
        client, admin, functionUrl=target.url + where, headers={"X-Key": f"${{{{secrets.{key}}}}}"}
    )
    assert client.delete(f"/api/secrets/{key}", headers=admin).status_code == 200
    make_due(database_url, job_id)
    [log] = logs_of(client, admin, job_id, 1)
    assert log["success"] is False
    assert log["message"] == f'Secret with key "{key}" not found for schedule header "X-Key".'
    assert target.to(where) == []
    client.delete(f"/api/schedules/{job_id}", headers=admin)


@pytest.mark.parametrize("value", ["line-one\nline-two", "tøp-secret"])
def test_a_secret_no_header_can_carry_fails_the_run_without_showing_it(
    client: TestClient, admin: dict[str, str], target: HttpTarget, database_url: str, value: str
) -> None:
    """A secret may hold a line break (a PEM key) or non-ASCII text, which no header value can carry: the
    HTTP client's error quotes the value escaped (`b'...\\n...'`), which masking the value itself missed,
    and the job's log, read by any key with schedules:read, showed it."""
    key = f"ODD_{secrets.token_hex(4).upper()}"
    value += secrets.token_hex(8)
    assert client.post("/api/secrets", json={"key": key, "value": value}, headers=admin).status_code == 201
    where = path()
    job_id = create(
        client, admin, functionUrl=target.url + where, headers={"X-Key": f"v ${{{{secrets.{key}}}}}"}
    )
    make_due(database_url, job_id)
    [log] = logs_of(client, admin, job_id, 1)
    assert log["success"] is False and log["statusCode"] == 500
    assert key in log["message"] and "X-Key" in log["message"], log
    for part in value.split("\n"):
        assert part[-8:] not in log["message"], log
    assert target.to(where) == []
    client.delete(f"/api/schedules/{job_id}", headers=admin)
    client.delete(f"/api/secrets/{key}", headers=admin)


def test_two_app_instances_make_each_due_run_once(
    client: TestClient, admin: dict[str, str], target: HttpTarget, settings: Settings, database_url: str
) -> None:
    with TestClient(create_app(settings), raise_server_exceptions=False) as other:
        wheres = [path() for _ in range(6)]
        # Due once, by `make_due`, and next on 1 January: every minute, a run the test crossed a minute's
        # turn during would be a second run of its own right.
        jobs = [
            create(client, admin, functionUrl=target.url + where, cronSchedule="0 0 1 1 *")
            for where in wheres
        ]
        make_due(database_url, *jobs)
        for where in wheres:
            target.wait_for(where, 1)
        for job_id in jobs:
            logs_of(other, admin, job_id, 1)
        time.sleep(0.5)  # (a second run, if one were made, would have arrived by now)
        assert [len(target.to(where)) for where in wheres] == [1] * len(wheres)
        for job_id in jobs:
            assert client.get(f"/api/schedules/{job_id}/logs", headers=admin).json()["totalCount"] == 1
            client.delete(f"/api/schedules/{job_id}", headers=admin)


def test_old_logs_are_pruned_by_the_runner(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    job_id = create(client, admin, functionUrl="https://example.com/never")
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "insert into schedules.job_logs (job_id, executed_at, status_code, success, duration_ms) "
            "values (%s, now() - interval '8 days', 200, true, 1), (%s, now(), 200, true, 1)",
            (job_id, job_id),
        )
    runner = client.app.services.schedule_runner  # type: ignore[attr-defined]
    assert client.portal is not None
    assert client.portal.call(runner.prune) >= 1
    assert client.get(f"/api/schedules/{job_id}/logs", headers=admin).json()["totalCount"] == 1
    client.delete(f"/api/schedules/{job_id}", headers=admin)
