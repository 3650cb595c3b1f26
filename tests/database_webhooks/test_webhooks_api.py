"""`/api/database/webhooks`: InsForge's routes, shapes and messages over the real database; every field
checked (a mistake is a 400 that changes nothing); admin only; the secret encrypted and never answered;
agent keys read with `webhooks:read` and never change a webhook; every change audited; the trigger function
runs as a role that can only queue."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql
from starlette.testclient import TestClient

from tests.support.app import admin_headers, agent_headers, anon_headers, mcp_call, user_headers

URL = "https://example.com/hooks/orders"
BASE = "/api/database/webhooks"


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


def new_table(database_url: str, schema: str = "public") -> str:
    name = f"items_{secrets.token_hex(4)}"
    with psycopg.connect(database_url) as conn:
        conn.execute(
            sql.SQL("create table {}.{} (id int primary key)").format(
                sql.Identifier(schema), sql.Identifier(name)
            )
        )
    return name


def hook_body(table: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": f"hook-{secrets.token_hex(3)}",
        "tableName": table,
        "events": ["INSERT"],
        "url": URL,
        **fields,
    }


def create(client: TestClient, admin: dict[str, str], table: str, **fields: Any) -> dict[str, Any]:
    created = client.post(BASE, json=hook_body(table, **fields), headers=admin)
    assert created.status_code == 201, created.text
    webhook: dict[str, Any] = created.json()
    return webhook


def stored(database_url: str, hook_id: str) -> dict[str, Any] | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "select name, url, secret_ciphertext from database_webhooks.hooks where id = %s", (hook_id,)
        ).fetchone()
    return None if row is None else {"name": row[0], "url": row[1], "secret_ciphertext": row[2]}


def test_create_read_list_update_delete(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    table = new_table(database_url)
    secret = f"s-{secrets.token_hex(8)}"
    hook = create(client, admin, table, events=["DELETE", "INSERT", "INSERT"], secret=secret, enabled=False)
    assert set(hook) == set(
        [
            "id",
            "name",
            "tableName",
            "events",
            "url",
            "secret",
            "hasSecret",
            "enabled",
            "createdAt",
            "updatedAt",
        ]
    )
    assert hook["tableName"] == table and hook["events"] == ["INSERT", "DELETE"] and hook["enabled"] is False
    assert hook["secret"] == "********" and hook["hasSecret"] is True
    ciphertext = stored(database_url, hook["id"])
    assert ciphertext is not None and secret not in str(ciphertext)

    assert client.get(f"{BASE}/{hook['id']}", headers=admin).json() == hook
    assert hook["id"] in [each["id"] for each in client.get(BASE, headers=admin).json()]

    patched = client.patch(
        f"{BASE}/{hook['id']}",
        json={"name": "renamed", "url": "http://example.org/x", "secret": None, "enabled": True},
        headers=admin,
    )
    assert patched.status_code == 200, patched.text
    answer = patched.json()
    assert answer["name"] == "renamed" and answer["url"] == "http://example.org/x" and answer["enabled"]
    assert (
        answer["secret"] is None and answer["hasSecret"] is False and answer["events"] == ["INSERT", "DELETE"]
    )

    deleted = client.delete(f"{BASE}/{hook['id']}", headers=admin)
    assert deleted.status_code == 200 and deleted.json() == {"message": "Webhook deleted"}
    assert stored(database_url, hook["id"]) is None

    audits = client.get("/api/logs/audits", params={"limit": 1000}, headers=admin).text
    assert "CREATE_DATABASE_WEBHOOK" in audits and "DELETE_DATABASE_WEBHOOK" in audits
    assert secret not in audits


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "name: Required, tableName: Required, events: Required, url: Required"),
        ({"events": []}, "events: At least one event is required (INSERT, UPDATE, DELETE)"),
        ({"events": ["TRUNCATE"]}, "events: each one of INSERT, UPDATE, DELETE, not 'TRUNCATE'"),
        ({"url": "ftp://example.com"}, "url: Must be a valid URL (http or https)"),
        ({"url": "http://"}, "url: Must be a valid URL (http or https)"),
        ({"name": "x" * 101}, "name: at most 100 characters"),
        ({"name": ""}, "name: a non-empty string"),
        ({"secret": ""}, "secret: a string of 1 to 256 characters"),
        ({"enabled": "yes"}, "enabled: Expected boolean"),
        ({"enable": True}, "enable: not a field of a database webhook"),
    ],
)
def test_bad_input_is_a_400_that_names_it(
    client: TestClient, admin: dict[str, str], database_url: str, body: dict[str, Any], message: str
) -> None:
    table = new_table(database_url)
    full = body if body == {} else {**hook_body(table), **body}
    answer = client.post(BASE, json=full, headers=admin)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "INVALID_INPUT" and answer.json()["message"] == message
    assert table not in client.get(BASE, headers=admin).text


def test_tables_that_take_no_webhook(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    for name in ("no_such_table", "auth.users", "database_webhooks.hooks", "pg_catalog.pg_class"):
        answer = client.post(BASE, json=hook_body(name), headers=admin)
        assert answer.status_code == 400, (name, answer.text)
        assert answer.json()["message"] == f'Table "{name}" does not exist'
    with psycopg.connect(database_url) as conn:
        conn.execute("create schema if not exists shop")
    table = new_table(database_url, "shop")
    assert create(client, admin, f"shop.{table}")["tableName"] == f"shop.{table}"
    quoted = f'we"ird {secrets.token_hex(2)}'
    with psycopg.connect(database_url) as conn:
        conn.execute(sql.SQL("create table {} (id int)").format(sql.Identifier(quoted)))
    assert create(client, admin, quoted)["tableName"] == quoted


def test_update_and_unknown_ids(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    hook = create(client, admin, new_table(database_url))
    moved = client.patch(f"{BASE}/{hook['id']}", json={"tableName": "other"}, headers=admin)
    assert moved.status_code == 400 and moved.json()["message"].startswith("tableName: a webhook's table")
    for missing in (str(uuid.uuid4()), "not-a-uuid"):
        for method, path in (
            ("GET", f"{BASE}/{missing}"),
            ("PATCH", f"{BASE}/{missing}"),
            ("DELETE", f"{BASE}/{missing}"),
            ("GET", f"{BASE}/{missing}/logs"),
        ):
            answer = client.request(method, path, json={"enabled": False}, headers=admin)
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["error"] == "NOT_FOUND" and answer.json()["message"] == "Webhook not found"


def test_logs_page(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    hook = create(client, admin, new_table(database_url))
    with psycopg.connect(database_url) as conn:
        for n in range(5):
            conn.execute(
                "insert into database_webhooks.logs (webhook_id, delivery_id, attempt, event_type, "
                "table_name, payload, status_code, success, delivered_at) "
                "values (%s, %s, 1, 'INSERT', 't', '{}', 200, true, now() - make_interval(secs => %s))",
                (hook["id"], n, n),
            )
    page = client.get(f"{BASE}/{hook['id']}/logs", params={"limit": 2, "offset": 1}, headers=admin).json()
    assert [log["deliveryId"] for log in page] == ["1", "2"]
    assert set(page[0]) >= set(
        [
            "id",
            "webhookId",
            "eventType",
            "tableName",
            "payload",
            "statusCode",
            "error",
            "success",
            "deliveredAt",
        ]
    )
    assert len(client.get(f"{BASE}/{hook['id']}/logs", headers=admin).json()) == 5
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "x"}):
        assert client.get(f"{BASE}/{hook['id']}/logs", params=bad, headers=admin).status_code == 400


def test_admin_only(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    hook = create(client, admin, new_table(database_url))
    user = user_headers(client, str(uuid.uuid4()), "someone@example.com")
    for headers, status in (({}, 401), (anon_headers(client), 401), (user, 403)):
        assert client.get(BASE, headers=headers).status_code == status
        assert client.get(f"{BASE}/{hook['id']}/logs", headers=headers).status_code == status
        assert client.post(BASE, json=hook_body("x"), headers=headers).status_code == status
        assert (
            client.patch(f"{BASE}/{hook['id']}", json={"enabled": False}, headers=headers).status_code
            == status
        )
        assert client.delete(f"{BASE}/{hook['id']}", headers=headers).status_code == status
    assert client.get(f"{BASE}/{hook['id']}", headers=admin).json()["enabled"] is True


def test_agents_read_with_webhooks_read_and_never_change_one(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    table = new_table(database_url)
    hook = create(client, admin, table)
    reader = agent_headers(client, admin, ["webhooks:read"])
    assert client.get(BASE, headers=reader).status_code == 200
    assert client.get(f"{BASE}/{hook['id']}/logs", headers=reader).status_code == 200
    refused = client.post(BASE, json=hook_body(table), headers=reader)
    assert refused.status_code == 403 and "webhooks:write" in refused.json()["message"]
    assert client.get(BASE, headers=agent_headers(client, admin, ["storage:read"])).status_code == 403

    writer = agent_headers(client, admin, ["*:write"])
    for method, path, body in (
        ("POST", BASE, hook_body(table)),
        ("PATCH", f"{BASE}/{hook['id']}", {"url": "https://attacker.example/"}),
        ("DELETE", f"{BASE}/{hook['id']}", None),
    ):
        answer = client.request(method, path, json=body, headers=writer)
        assert answer.status_code == 403, answer.text
        assert answer.json()["message"].startswith(
            "Agent keys may not create, change or delete database webhooks"
        )
        assert "Ask the project admin" in answer.json()["nextActions"]
    assert client.get(f"{BASE}/{hook['id']}", headers=admin).json()["url"] == URL
    assert "refused" in client.get("/api/logs/audits", params={"limit": 1000}, headers=admin).text

    listed = mcp_call(client, writer, "list-database-webhooks", {})
    assert hook["id"] in listed
    made = mcp_call(
        client, writer, "create-database-webhook",
        {"name": "n", "tableName": table, "events": ["INSERT"], "url": URL},
    )  # fmt: skip
    assert "Agent keys may not create" in made


def test_the_trigger_function_runs_as_a_role_that_can_only_queue(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "select pg_get_userbyid(proowner), prosecdef, proconfig from pg_proc "
            "where oid = 'database_webhooks.capture()'::regprocedure"
        ).fetchone()
        assert row == ("kilnbase_webhook_capture", True, ["search_path=pg_catalog"])
        reach = conn.execute(
            "select has_table_privilege('kilnbase_webhook_capture', 'database_webhooks.outbox', 'select'), "
            "has_table_privilege('kilnbase_webhook_capture', 'database_webhooks.logs', 'insert'), "
            "has_column_privilege('kilnbase_webhook_capture', 'database_webhooks.hooks', 'url', 'select'), "
            "has_function_privilege('project_admin', 'database_webhooks.capture()', 'execute'), "
            "has_schema_privilege('authenticated', 'database_webhooks', 'usage')"
        ).fetchone()
        assert reach == (False, False, False, False, False)
