"""Deliveries, for real: row changes on an app table reach a loopback receiver as InsForge's payload, signed
with the webhook's secret; only the events asked for, nothing while switched off or rolled back; a receiver
that is down gets the event once it is up; a 4xx is final; two app instances deliver each event once; a
deleted webhook's trigger is gone; a dropped table breaks nothing. Each test makes its own table."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import DatabaseWebhooksSettings, Settings
from tests.database_webhooks.receiver import Receiver, signature_valid
from tests.support.app import admin_headers, services_of


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        database_webhooks=DatabaseWebhooksSettings(
            request_timeout_seconds=2.0, connect_timeout_seconds=1.0, retry_delay_seconds=0.2, max_attempts=3
        ),
    )


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


def new_table(database_url: str) -> str:
    name = f"orders_{secrets.token_hex(4)}"
    with psycopg.connect(database_url) as conn:
        conn.execute(
            sql.SQL("create table {} (id int primary key, item text, qty int)").format(sql.Identifier(name))
        )
    return name


def run(database_url: str, statement: str, table: str, *params: Any) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(table)), params)


def create(client: TestClient, admin: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": f"hook-{secrets.token_hex(3)}", "events": ["INSERT", "UPDATE", "DELETE"], **fields}
    created = client.post("/api/database/webhooks", json=body, headers=admin)
    assert created.status_code == 201, created.text
    webhook: dict[str, Any] = created.json()
    return webhook


def logs_of(client: TestClient, admin: dict[str, str], hook_id: str, count: int) -> list[dict[str, Any]]:
    """The webhook's log rows, once there are `count` of them (written just after each attempt)."""
    deadline = time.monotonic() + 15
    while True:
        logs: list[dict[str, Any]] = client.get(
            f"/api/database/webhooks/{hook_id}/logs", headers=admin
        ).json()
        if len(logs) >= count:
            return logs
        assert time.monotonic() < deadline, logs
        time.sleep(0.05)


def outbox_size(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("select count(*) from database_webhooks.outbox").fetchone()
    assert row is not None
    return int(row[0])


def test_insert_update_delete_arrive_signed_with_insforge_payload(
    client: TestClient, admin: dict[str, str], receiver: Receiver, database_url: str
) -> None:
    table = new_table(database_url)
    path = receiver.new_path()
    secret = f"whsec-{secrets.token_hex(8)}"
    hook = create(client, admin, tableName=table, url=receiver.origin + path, secret=secret)
    assert hook["secret"] == "********" and hook["hasSecret"] is True

    run(database_url, "insert into {} values (1, 'tea', 2)", table)
    [inserted] = receiver.wait_for(path, 1)
    assert inserted["json"] == {
        "event": "INSERT",
        "table": table,
        "record": {"id": 1, "item": "tea", "qty": 2},
        "old_record": None,
    }
    assert inserted["headers"]["content-type"] == "application/json"
    assert inserted["headers"]["x-insforge-event"] == "INSERT"
    assert inserted["headers"]["x-insforge-table"] == table
    assert inserted["headers"]["x-insforge-delivery-id"]
    assert signature_valid(secret, inserted)
    assert not signature_valid("another secret", inserted)
    # (Each attempt's log row is written once the receiver has answered: waited for, so that the log's
    # order below is the events' own, not that of the runner's writes on a loaded machine.)
    logs_of(client, admin, hook["id"], 1)

    run(database_url, "update {} set qty = 3 where id = 1", table)
    receiver.wait_for(path, 2)
    logs_of(client, admin, hook["id"], 2)
    run(database_url, "delete from {} where id = 1", table)
    _, updated, deleted = receiver.wait_for(path, 3)
    assert updated["json"]["event"] == "UPDATE"
    assert updated["json"]["record"]["qty"] == 3 and updated["json"]["old_record"]["qty"] == 2
    assert deleted["json"] == {
        "event": "DELETE",
        "table": table,
        "record": None,
        "old_record": {"id": 1, "item": "tea", "qty": 3},
    }
    assert all(signature_valid(secret, request) for request in (updated, deleted))

    logs = logs_of(client, admin, hook["id"], 3)
    assert [log["eventType"] for log in logs] == ["DELETE", "UPDATE", "INSERT"]  # newest first
    first = logs[-1]
    assert first["webhookId"] == hook["id"] and first["tableName"] == table
    assert first["statusCode"] == 200 and first["success"] is True and first["error"] is None
    assert first["payload"] == inserted["json"] and first["deliveredAt"] and first["attempt"] == 1
    assert secret not in client.get(f"/api/database/webhooks/{hook['id']}", headers=admin).text
    assert outbox_size(database_url) == 0


def test_a_change_through_the_records_api_is_sent(
    client: TestClient, admin: dict[str, str], receiver: Receiver, database_url: str
) -> None:
    """The trigger runs as whoever changed the row (here project_admin, which cannot reach the outbox)."""
    table = new_table(database_url)
    path = receiver.new_path()
    create(client, admin, tableName=table, url=receiver.origin + path, events=["INSERT"])
    added = client.post(f"/api/database/records/{table}", json=[{"id": 7, "item": "jam"}], headers=admin)
    assert added.status_code in (200, 201), added.text
    [request] = receiver.wait_for(path, 1)
    assert request["json"]["record"] == {"id": 7, "item": "jam", "qty": None}
    assert "x-insforge-signature" not in request["headers"]  # (no secret: unsigned, as in InsForge)


def test_only_the_events_asked_for_and_nothing_while_off_or_rolled_back(
    client: TestClient, admin: dict[str, str], receiver: Receiver, database_url: str
) -> None:
    table = new_table(database_url)
    path = receiver.new_path()
    hook = create(client, admin, tableName=table, url=receiver.origin + path, events=["UPDATE"])
    run(database_url, "insert into {} values (1, 'a', 1), (2, 'b', 1)", table)
    run(database_url, "update {} set qty = 5 where id = 2", table)
    run(database_url, "delete from {} where id = 1", table)
    [only] = receiver.wait_for(path, 1)
    assert only["json"]["event"] == "UPDATE" and only["json"]["record"]["id"] == 2

    with psycopg.connect(database_url) as conn:
        conn.execute(sql.SQL("update {} set qty = 9").format(sql.Identifier(table)))
        conn.rollback()
    off = client.patch(f"/api/database/webhooks/{hook['id']}", json={"enabled": False}, headers=admin)
    assert off.status_code == 200 and off.json()["enabled"] is False
    run(database_url, "update {} set qty = 6", table)
    assert outbox_size(database_url) == 0
    on = client.patch(
        f"/api/database/webhooks/{hook['id']}", json={"enabled": True, "events": ["DELETE"]}, headers=admin
    )
    assert on.json()["events"] == ["DELETE"]
    run(database_url, "update {} set qty = 7", table)
    run(database_url, "delete from {}", table)
    _, deleted = receiver.wait_for(path, 2)
    assert deleted["json"]["event"] == "DELETE"
    time.sleep(0.3)
    assert len(receiver.to(path)) == 2


def test_a_receiver_that_is_down_gets_the_event_once_up(
    client: TestClient, admin: dict[str, str], receiver: Receiver, database_url: str
) -> None:
    table = new_table(database_url)
    path = receiver.new_path("drop", 503)
    hook = create(client, admin, tableName=table, url=receiver.origin + path)
    run(database_url, "insert into {} values (1, 'x', 1)", table)
    attempts = receiver.wait_for(path, 3)
    assert [request["answered"] for request in attempts] == ["drop", 503, 200]
    assert len({request["headers"]["x-insforge-delivery-id"] for request in attempts}) == 1
    assert attempts[0]["body"] == attempts[2]["body"]
    logs = logs_of(client, admin, hook["id"], 3)
    assert [(log["attempt"], log["success"]) for log in logs] == [(3, True), (2, False), (1, False)]
    assert logs[2]["statusCode"] is None and logs[2]["error"]
    assert logs[1]["statusCode"] == 503 and logs[1]["error"] == "HTTP 503"
    assert outbox_size(database_url) == 0


def test_a_4xx_is_final_and_a_receiver_down_for_good_is_given_up(
    client: TestClient, admin: dict[str, str], receiver: Receiver, database_url: str
) -> None:
    table = new_table(database_url)
    refused = receiver.new_path(410)
    down = receiver.new_path(500, 502, 503, 504)
    refusing = create(client, admin, tableName=table, url=receiver.origin + refused)
    failing = create(client, admin, tableName=table, url=receiver.origin + down)
    run(database_url, "insert into {} values (1, 'x', 1)", table)
    [log] = logs_of(client, admin, refusing["id"], 1)
    assert log["statusCode"] == 410 and log["success"] is False and log["error"] == "HTTP 410"
    last = logs_of(client, admin, failing["id"], 3)[0]
    assert last["attempt"] == 3 and last["statusCode"] == 503
    assert last["error"] == "HTTP 503 (gave up after 3 attempts)"
    time.sleep(0.8)
    assert len(receiver.to(refused)) == 1 and len(receiver.to(down)) == 3
    assert outbox_size(database_url) == 0


def test_two_app_instances_deliver_each_event_once(
    client: TestClient, admin: dict[str, str], receiver: Receiver, settings: Settings, database_url: str
) -> None:
    table = new_table(database_url)
    path = receiver.new_path()
    create(client, admin, tableName=table, url=receiver.origin + path, events=["INSERT"])
    with TestClient(create_app(settings), raise_server_exceptions=False):
        insert = sql.SQL("insert into {} values (%s, 'x', 1)").format(sql.Identifier(table))
        with psycopg.connect(database_url) as conn:
            for n in range(30):  # (30 transactions: 30 wake-ups)
                conn.execute(insert, (n,))
                conn.commit()
        receiver.wait_for(path, 30)
        time.sleep(0.5)  # (a second delivery, if one were made, would have arrived by now)
    ids = sorted(request["json"]["record"]["id"] for request in receiver.to(path))
    assert ids == list(range(30))


def test_deleting_a_webhook_drops_its_trigger_and_a_dropped_table_breaks_nothing(
    client: TestClient, admin: dict[str, str], receiver: Receiver, database_url: str
) -> None:
    table = new_table(database_url)
    path = receiver.new_path()
    hook = create(client, admin, tableName=table, url=receiver.origin + path)

    def triggers() -> int:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "select count(*) from pg_trigger where tgrelid = to_regclass(%s)", (f'public."{table}"',)
            ).fetchone()
        assert row is not None
        return int(row[0])

    assert triggers() == 1
    deleted = client.delete(f"/api/database/webhooks/{hook['id']}", headers=admin)
    assert deleted.status_code == 200 and deleted.json() == {"message": "Webhook deleted"}
    assert triggers() == 0
    run(database_url, "insert into {} values (1, 'x', 1)", table)
    assert outbox_size(database_url) == 0

    other = create(client, admin, tableName=table, url=receiver.origin + path)
    run(database_url, "drop table {}", table)
    assert client.get(f"/api/database/webhooks/{other['id']}", headers=admin).status_code == 200
    new_again = new_table(database_url)
    assert new_again != table
    assert client.delete(f"/api/database/webhooks/{other['id']}", headers=admin).status_code == 200
    assert client.get(f"/api/database/webhooks/{other['id']}", headers=admin).status_code == 404
    assert receiver.to(path) == []


def test_a_large_row_is_sent_as_its_primary_key(
    client: TestClient, admin: dict[str, str], receiver: Receiver, database_url: str
) -> None:
    table = new_table(database_url)
    path = receiver.new_path()
    create(client, admin, tableName=table, url=receiver.origin + path, events=["INSERT"])
    run(database_url, "insert into {} values (5, repeat('x', 300000), 1)", table)
    [request] = receiver.wait_for(path, 1)
    assert request["json"] == {
        "event": "INSERT",
        "table": table,
        "record": {"id": 5},
        "old_record": None,
        "truncated": True,
    }


def test_old_logs_are_pruned(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    table = new_table(database_url)
    hook = create(client, admin, tableName=table, url="https://example.com/never")
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "insert into database_webhooks.logs (webhook_id, delivery_id, attempt, event_type, table_name, "
            "payload, status_code, success, delivered_at) values "
            "(%s, 1, 1, 'INSERT', 't', '{}', 200, true, now() - interval '8 days'), "
            "(%s, 2, 1, 'INSERT', 't', '{}', 200, true, now())",
            (hook["id"], hook["id"]),
        )
    runner = services_of(client).webhook_runner
    assert client.portal is not None
    assert client.portal.call(runner.prune) >= 1
    assert len(client.get(f"/api/database/webhooks/{hook['id']}/logs", headers=admin).json()) == 1


def raw_sql(client: TestClient, admin: dict[str, str], query: str) -> None:
    """As the project admin (project_admin's rights), as an app or an agent would run it."""
    answer = client.post("/api/database/advance/rawsql", json={"query": query}, headers=admin)
    assert answer.status_code == 200, answer.text


def test_the_apps_casts_to_json_never_run_in_the_trigger(
    client: TestClient, admin: dict[str, str], receiver: Receiver, database_url: str
) -> None:
    """The trigger function runs with rights the app lacks; a cast to json the app wrote for its own type
    would run inside it if the row went through to_jsonb. Here the cast refuses to run at all, so a change
    would fail if it were called: the change goes through, and the column is sent as its text."""
    table, mood = f"moods_{secrets.token_hex(4)}", f"mood_{secrets.token_hex(4)}"
    raw_sql(client, admin, f"create table {table} (id int primary key)")
    path = receiver.new_path()
    create(client, admin, tableName=table, url=receiver.origin + path, events=["INSERT"])
    raw_sql(
        client,
        admin,
        f"create type {mood} as enum ('calm', 'cross'); "
        f"create domain {mood}_level as int check (value > 0); "
        f"create function {mood}_json(v {mood}) returns json language plpgsql as $$ "
        "begin raise exception 'the app''s cast ran as %', current_user; end $$; "
        f"create cast ({mood} as json) with function {mood}_json({mood}); "
        f"alter table {table} add column feeling {mood}, add column feelings {mood}[], "
        f"add column level {mood}_level, add column note text; "
        f"insert into {table} values (1, 'calm', '{{calm,cross}}', 3, null)",
    )
    [inserted] = receiver.wait_for(path, 1)
    assert inserted["json"]["record"] == {
        "id": 1,
        "feeling": "calm",
        "feelings": "{calm,cross}",
        "level": 3,
        "note": None,
    }


def test_no_webhook_while_the_trigger_function_runs_as_the_changing_role(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    """Where the owner could not set up the trigger's role, the migration leaves the function SECURITY
    INVOKER (never the owner's own definer function): creating a webhook is then refused, since its trigger
    would fail every change to the table."""
    table = new_table(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("alter function database_webhooks.capture() security invoker")
        try:
            refused = client.post(
                "/api/database/webhooks",
                json={
                    "name": "off",
                    "tableName": table,
                    "events": ["INSERT"],
                    "url": "https://example.com/x",
                },
                headers=admin,
            )
        finally:
            conn.execute("alter function database_webhooks.capture() security definer")
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "DATABASE_WEBHOOKS_UNAVAILABLE"
    listed = client.get("/api/database/webhooks", headers=admin).json()
    assert all(hook["tableName"] != table for hook in listed)
    run(database_url, "insert into {} values (1, 'tea', 2)", table)  # (no trigger was left behind)
