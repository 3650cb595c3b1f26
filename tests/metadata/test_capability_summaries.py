"""`/api/metadata` (JSON, markdown, and the MCP tool) sums up schedules, database webhooks, the KV store and
agent memory: each section holds what was made here, never a secret (header values, webhook secrets, the
parts of a URL but its host, KV values, memory content), and an agent key sees a section only with its
feature group's read scope. InsForge's fields stay as they were. Each test makes and asserts on names of its
own (the advisor, which has one latest scan per database, is in `test_advisor_summary.py`)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import psycopg
from starlette.testclient import TestClient

from tests.metadata.conftest import NewName
from tests.support.app import agent_headers, mcp_call

#: InsForge's keys, then Kilnbase's.
_INSFORGE_KEYS = {"auth", "database", "storage", "functions", "realtime", "version"}
_SUMMARY_KEYS = {
    "schedules",
    "databaseWebhooks",
    "databaseBackups",
    "advisor",
    "kv",
    "memory",
    "messaging",
    "payments",
}


def _everything(client: TestClient, headers: dict[str, str]) -> tuple[dict[str, Any], str, str]:
    """The JSON, its text, and the markdown."""
    response = client.get("/api/metadata", headers=headers)
    assert response.status_code == 200, response.text
    markdown = client.get("/api/metadata?format=markdown", headers=headers)
    assert markdown.status_code == 200, markdown.text
    return response.json(), response.text, markdown.text


def _schedule(client: TestClient, admin: dict[str, str], **fields: Any) -> None:
    made = client.post("/api/schedules", headers=admin, json={"httpMethod": "POST", **fields})
    assert made.status_code == 201, made.text


def test_schedules_show_cadence_target_and_last_run_never_headers(
    client: TestClient, admin: dict[str, str], database_url: str, new_name: NewName
) -> None:
    header_secret, user_secret, query_secret = (f"{w}-{secrets.token_hex(6)}" for w in ("hdr", "usr", "qry"))
    remote, local, idle = new_name("report"), new_name("cleanup"), new_name("idle")
    # (New Year's midnight: none of them runs during the test.)
    _schedule(
        client,
        admin,
        name=remote,
        cronSchedule="0 0 1 1 *",
        functionUrl=f"https://{user_secret}@jobs.example.com/run/{user_secret}?token={query_secret}",
        headers={"Authorization": f"Bearer {header_secret}"},
    )
    _schedule(
        client,
        admin,
        name=local,
        cronSchedule="0 0 1 1 *",
        functionUrl=f"/functions/cleanup?k={query_secret}",
    )
    _schedule(client, admin, name=idle, cronSchedule="0 0 1 1 *", functionUrl="https://example.org/")
    paused = client.get("/api/schedules", headers=admin).json()
    idle_id = next(job["id"] for job in paused if job["name"] == idle)
    assert (
        client.patch(f"/api/schedules/{idle_id}", headers=admin, json={"isActive": False}).status_code == 200
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "insert into schedules.job_logs (job_id, executed_at, status_code, success, duration_ms, "
            "message) select id, '2025-03-01T09:30:00Z', 503, false, 40, %s from schedules.jobs "
            "where name = %s",
            (f"failed: {header_secret}", remote),
        )

    body, text, markdown = _everything(client, admin)
    jobs = {job["name"]: job for job in body["schedules"]["jobs"]}
    assert body["schedules"]["total"] >= 3
    assert jobs[remote] == {
        "name": remote,
        "cronSchedule": "0 0 1 1 *",
        "isActive": True,
        "httpMethod": "POST",
        "target": "jobs.example.com",
        "nextRunAt": jobs[remote]["nextRunAt"],
        "lastRun": {"at": "2025-03-01T09:30:00Z", "success": False, "statusCode": 503},
    }
    assert jobs[remote]["nextRunAt"].endswith("-01-01T00:00:00Z")
    assert jobs[local]["target"] == "/functions/cleanup" and jobs[local]["lastRun"] is None
    assert jobs[idle]["isActive"] is False and jobs[idle]["nextRunAt"] is None
    assert (
        f"- {remote}: `0 0 1 1 *` POST jobs.example.com; active; last run FAILED (503) 2025-03-01 09:30 UTC"
        in (markdown)
    )
    assert f"- {local}: `0 0 1 1 *` POST /functions/cleanup; active; not run yet" in markdown
    assert f"- {idle}: `0 0 1 1 *` POST example.org; off; not run yet" in markdown
    for secret in (header_secret, user_secret, query_secret, "Authorization"):
        assert secret not in text and secret not in markdown


def test_webhooks_show_table_events_host_and_failures_never_the_url_or_secret(
    client: TestClient,
    admin: dict[str, str],
    sql: Callable[[str], Any],
    database_url: str,
    new_name: NewName,
) -> None:
    table, signed, plain = new_name("orders"), new_name("ship"), new_name("audit")
    signing, password, path_token, query_token = (
        f"{w}-{secrets.token_hex(6)}" for w in ("whsec", "pass", "path", "qry")
    )
    sql(f"create table {table} (id int primary key)")
    for name, url, extra in (
        (
            signed,
            f"https://hooker:{password}@hooks.example.com:8443/in/{path_token}?token={query_token}",
            {"secret": signing, "events": ["INSERT", "UPDATE"]},
        ),
        (plain, "http://10.0.0.7/audit", {"events": ["DELETE"], "enabled": False}),
    ):
        made = client.post(
            "/api/database/webhooks",
            headers=admin,
            json={"name": name, "tableName": table, "url": url, **extra},
        )
        assert made.status_code == 201, made.text
    # Two failed attempts today, one delivered, one failure two days ago (outside the window).
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "insert into database_webhooks.logs (webhook_id, delivery_id, attempt, event_type, table_name, "
            "payload, status_code, error, success, delivered_at) "
            "select h.id, 1, a.attempt, 'INSERT', h.table_name, '{}', a.status, null, a.ok, now() - a.age "
            "from database_webhooks.hooks h, (values (1, 500, false, interval '1 minute'), "
            "(2, 502, false, interval '2 minutes'), (3, 200, true, interval '3 minutes'), "
            "(1, 500, false, interval '2 days')) as a(attempt, status, ok, age) where h.name = %s",
            (signed,),
        )

    body, text, markdown = _everything(client, admin)
    section = body["databaseWebhooks"]
    hooks = {hook["name"]: hook for hook in section["webhooks"]}
    assert section["recentFailuresWindowHours"] == 24 and section["total"] >= 2
    assert hooks[signed] == {
        "name": signed,
        "tableName": table,
        "events": ["INSERT", "UPDATE"],
        "enabled": True,
        "urlHost": "hooks.example.com:8443",
        "hasSecret": True,
        "recentFailures": 2,
    }
    assert hooks[plain]["urlHost"] == "10.0.0.7" and hooks[plain]["hasSecret"] is False
    assert hooks[plain]["enabled"] is False and hooks[plain]["recentFailures"] == 0
    line = (
        f"- {signed}: {table} INSERT,UPDATE -> hooks.example.com:8443; enabled; signed; 2 failed deliveries"
    )
    assert f"{line} in 24h\n" in markdown
    assert f"- {plain}: {table} DELETE -> 10.0.0.7; disabled; unsigned\n" in markdown
    for secret in (signing, password, path_token, query_token, "hooker"):
        assert secret not in text and secret not in markdown


def test_kv_namespaces_and_memory_scopes_are_counted_never_read(
    client: TestClient, admin: dict[str, str], database_url: str, new_name: NewName
) -> None:
    namespace, scope = new_name("flags"), new_name("project")
    value, content, title = (f"{w}-{secrets.token_hex(6)}" for w in ("value", "content", "title"))
    for key in ("a", "b", "c"):
        put = client.put(f"/api/kv/entries/{namespace}/{key}", headers=admin, json={"value": {"v": value}})
        assert put.status_code in (200, 201), put.text
    with psycopg.connect(database_url, autocommit=True) as conn:
        # Neither an expired entry nor an end user's counts: the summary is of the live, global store.
        conn.execute(
            "insert into kv.entries (owner_id, namespace, key, value, expires_at) values "
            "(null, %s, 'gone', '1', now() - interval '1 minute'), "
            "(gen_random_uuid(), %s, 'mine', '1', null)",
            (namespace, namespace),
        )
        # Memory rows as the memory service stores them (the metadata only counts them).
        conn.execute(
            "insert into memory.memories (scope, kind, title, content, embedding, embedding_model) "
            "select %s, 'fact', %s, %s, array_fill(0.5::real, array[1536])::vector, 'test/embed' "
            "from generate_series(1, 2)",
            (scope, title, content),
        )

    body, text, markdown = _everything(client, admin)
    assert {"namespace": namespace, "keys": 3} in body["kv"]["namespaces"]
    assert body["kv"]["totalNamespaces"] >= 1
    assert {"scope": scope, "memories": 2} in body["memory"]["scopes"]
    assert body["memory"]["totalScopes"] >= 1
    assert f"{namespace} (3 keys)" in markdown and f"{scope} (2 memories)" in markdown
    for secret in (value, content, title, "gone", "mine"):
        assert secret not in text and secret not in markdown


def test_an_agent_sees_only_the_sections_its_scopes_reach(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    namespace = new_name("scoped")
    assert client.put(f"/api/kv/entries/{namespace}/k", headers=admin, json={"value": 1}).status_code in (
        200,
        201,
    )

    narrow = agent_headers(client, admin, ["metadata:read"])
    body, _, markdown = _everything(client, narrow)
    assert set(body) == {"version", "schemaFingerprint"}
    assert "## Schedules" not in markdown and namespace not in markdown
    assert (
        "- this key's scopes do not reach: auth (auth:read), database (database:read), storage "
        "(storage:read), functions (functions:read), realtime (realtime:read), ai (ai:read), schedules "
        "(schedules:read), databaseWebhooks (webhooks:read), databaseBackups (database:read), advisor "
        "(advisor:read), kv (kv:read), memory (memory:read)"
    ) in markdown

    some = agent_headers(client, admin, ["metadata:read", "schedules:read", "kv:read"])
    body, _, markdown = _everything(client, some)
    hidden = {"databaseWebhooks", "databaseBackups", "advisor", "memory"}
    assert {"schedules", "kv"} <= set(body) and hidden.isdisjoint(body)
    assert "## Schedules" in markdown and f"{namespace} (1 key)" in markdown
    assert (
        "databaseWebhooks (webhooks:read), databaseBackups (database:read), advisor (advisor:read), memory "
        "(memory:read)"
    ) in markdown
    # The MCP tool writes the same markdown, as lines.
    lines = json.loads(mcp_call(client, some, "get-backend-metadata", {}))["backend"]
    assert "## Key-value store" in lines and "## Agent memory" not in lines

    everything = agent_headers(client, admin, ["*:read"])
    body, _, markdown = _everything(client, everything)
    assert set(body) >= _SUMMARY_KEYS and "## Not shown" not in markdown


def test_backups_show_the_latest_and_the_schedule(client: TestClient, admin: dict[str, str]) -> None:
    made = client.post("/api/database/backups", headers=admin, json={})
    assert made.status_code == 201, made.text
    deadline = time.monotonic() + 60
    while True:
        rows = client.get("/api/database/backups", headers=admin).json()["backups"]
        row = next(r for r in rows if r["id"] == made.json()["id"])
        if row["status"] != "running":
            break
        assert time.monotonic() < deadline, "the backup did not finish"
        time.sleep(0.2)
    assert row["status"] == "completed", row
    body, _, markdown = _everything(client, admin)
    section = body["databaseBackups"]
    assert section["completed"] >= 1 and section["latestCompletedAt"] >= row["completedAt"]
    schedule = client.get("/api/database/backups/config", headers=admin).json()
    assert section["schedule"] == {key: schedule[key] for key in ("enabled", "cronSchedule", "nextBackupAt")}
    assert "## Database backups" in markdown and "completed backup" in markdown
    assert "## Database backups" in json.loads(mcp_call(client, admin, "get-backend-metadata", {}))["backend"]


def test_messaging_and_payments_are_counted_never_shown(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    """The outbox's counts and each Stripe environment's state: never a recipient, a subject, a body, a key,
    an account or a customer."""
    body, _, markdown = _everything(client, admin)
    assert body["payments"] == {"stripe": [], "razorpay": []}
    assert "- not configured: a person sets a key" in markdown
    with psycopg.connect(database_url, autocommit=True) as conn:
        for status in ("pending", "pending", "sent"):
            conn.execute(
                "insert into messaging.outbox (channel, status, payload, max_retries, next_attempt_at, "
                "sent_at) values ('email', %s, %s, 3, now() + interval '1 year', now())",
                (status, json.dumps({"to": "secret-person@example.com", "subject": "Private", "body": "x"})),
            )
        conn.execute(
            "insert into messaging.dead_letter (id, channel, payload, retry_count, max_retries, created_at) "
            "values (gen_random_uuid(), 'email', '{}', 3, 3, now())"
        )
        conn.execute(
            "insert into payments.provider_connections (environment, status, provider_account_id, "
            "webhook_endpoint_id) values ('test', 'connected', 'acct_hidden', 'we_1')"
        )
        conn.execute(
            "insert into payments.stripe_products (environment, product_id, name, active) "
            "values ('test', 'prod_1', 'Pro', true), ('test', 'prod_2', 'Old', false)"
        )
        conn.execute(
            "insert into payments.stripe_subscriptions (environment, subscription_id, customer_id, status) "
            "values ('test', 'sub_1', 'cus_hidden', 'active'), ('test', 'sub_2', 'cus_hidden', 'canceled')"
        )
        conn.execute(
            "insert into payments.provider_connections (provider, environment, status, provider_account_id) "
            "values ('razorpay', 'live', 'connected', 'rzp_live_hidden')"
        )
        conn.execute(
            "insert into payments.razorpay_plans (environment, plan_id, item_id, period, interval, currency) "
            "values ('live', 'plan_1', 'item_1', 'monthly', 1, 'INR')"
        )
    body, raw, markdown = _everything(client, admin)
    messaging = body["messaging"]
    assert (
        messaging["pending"],
        messaging["sending"],
        messaging["sentRecently"],
        messaging["deadLetters"],
    ) == (
        2,
        0,
        1,
        1,
    )
    assert body["payments"] == {
        "stripe": [
            {
                "environment": "test",
                "status": "connected",
                "webhookConfigured": True,
                "lastSyncedAt": None,
                "activeProducts": 1,
                "activeSubscriptions": 1,
            }
        ],
        "razorpay": [
            {
                "environment": "live",
                "status": "connected",
                "webhookConfigured": False,
                "lastSyncedAt": None,
                "activePlans": 1,
                "activeSubscriptions": 0,
            }
        ],
    }
    assert "- 2 messages queued, 1 sent in the last 24 hours" in markdown
    assert "- test: connected, webhook configured, 1 active product, 1 active subscription" in markdown
    assert "- Razorpay live: connected, no webhook yet, 1 active plan, 0 active subscriptions" in markdown
    for secret in ("secret-person", "Private", "acct_hidden", "cus_hidden", "rzp_live_hidden"):
        assert secret not in raw and secret not in markdown
    # An agent key sees them with its read scopes only.
    payments_only = agent_headers(client, admin, ["metadata:read", "payments:read"])
    seen, _, _ = _everything(client, payments_only)
    assert "payments" in seen and "messaging" not in seen


def test_insforge_fields_are_unchanged(client: TestClient, admin: dict[str, str]) -> None:
    body = client.get("/api/metadata", headers=admin).json()
    assert set(body) == _INSFORGE_KEYS | _SUMMARY_KEYS | {"ai", "schemaFingerprint"}
    for slice_name in ("auth", "storage", "functions", "realtime"):
        assert body[slice_name] == client.get(f"/api/metadata/{slice_name}", headers=admin).json()
    assert set(body["database"]) == {"tables", "views", "totalSizeInGB", "schemaFingerprint", "hint"}
    assert set(body["storage"]) == {"buckets", "totalSizeInGB"}
    assert isinstance(body["functions"], list) and set(body["realtime"]) == {"channels", "permissions"}
