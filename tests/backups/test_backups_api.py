"""`/api/database/backups` over a real database: backups made, renamed, deleted with their file, restored in
place (and refused, or rolled back whole), the schedule's config, and agents' reach."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.config import Settings
from kilnbase.identity.actor import SYSTEM
from tests.support.app import admin_headers, agent_headers, services_of

API = "/api/database/backups"


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


def _sql(settings: Settings, statement: str) -> list[tuple[Any, ...]]:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def _finished(client: TestClient, admin: dict[str, str], backup_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = client.get(API, headers=admin).json()["backups"]
        row: dict[str, Any] = next(r for r in rows if r["id"] == backup_id)
        if row["status"] != "running":
            return row
        time.sleep(0.2)
    raise AssertionError("the backup did not finish")


def _table_backed_up(
    client: TestClient, admin: dict[str, str], settings: Settings, rows: str
) -> tuple[str, str]:
    """A new table holding `rows` (ids), and the id of a completed backup made then."""
    table = f"t_{secrets.token_hex(3)}"
    _sql(settings, f"create table public.{table} (id int primary key)")
    _sql(settings, f"insert into public.{table} values {rows}")
    return table, _backup(client, admin)["id"]


def _backup(client: TestClient, admin: dict[str, str], name: str | None = None) -> dict[str, Any]:
    created = client.post(API, headers=admin, json={} if name is None else {"name": name})
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "running"
    return _finished(client, admin, created.json()["id"])


def test_create_completes_with_size_and_file(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    name = f"before-{secrets.token_hex(3)}"
    row = _backup(client, admin, name)
    assert row["status"] == "completed", row
    assert row["name"] == name and row["triggerSource"] == "manual" and row["sizeBytes"] > 0
    assert row["completedAt"] and row["expiresAt"] is None
    files = list((settings.data_dir / "backups").glob("*.tar"))
    assert any(f.stat().st_size == row["sizeBytes"] for f in files)


def test_rename_and_duplicate_names(client: TestClient, admin: dict[str, str]) -> None:
    first = _backup(client, admin, f"a-{secrets.token_hex(3)}")
    second = _backup(client, admin)
    renamed = client.patch(f"{API}/{second['id']}", headers=admin, json={"name": "  renamed-x  "})
    assert renamed.status_code == 200 and renamed.json()["name"] == "renamed-x"
    taken = client.patch(f"{API}/{second['id']}", headers=admin, json={"name": first["name"]})
    assert taken.status_code == 409 and taken.json()["message"] == "A backup with this name already exists."
    duplicate = client.post(API, headers=admin, json={"name": first["name"]})
    assert duplicate.status_code == 409 and duplicate.json()["error"] == "DATABASE_DUPLICATE"
    cleared = client.patch(f"{API}/{second['id']}", headers=admin, json={"name": None})
    assert cleared.json()["name"] is None
    assert client.patch(f"{API}/{second['id']}", headers=admin, json={"name": ""}).status_code == 400
    assert client.patch(f"{API}/{second['id']}", headers=admin, json={"name": "x" * 65}).status_code == 400


def test_bad_and_unknown_ids(client: TestClient, admin: dict[str, str]) -> None:
    bad = client.delete(f"{API}/not-a-uuid", headers=admin)
    assert bad.status_code == 400 and bad.json()["message"] == "Invalid backup ID"
    unknown = uuid.uuid4()
    for response in (
        client.delete(f"{API}/{unknown}", headers=admin),
        client.post(f"{API}/{unknown}/restore", headers=admin),
        client.patch(f"{API}/{unknown}", headers=admin, json={"name": "n"}),
    ):
        assert response.status_code == 404 and response.json()["message"] == "Backup not found."


def test_delete_removes_row_and_file(client: TestClient, admin: dict[str, str], settings: Settings) -> None:
    row = _backup(client, admin)
    before = set((settings.data_dir / "backups").glob("*.tar"))
    deleted = client.delete(f"{API}/{row['id']}", headers=admin)
    assert deleted.status_code == 200 and deleted.json() == {"message": "Backup deleted successfully"}
    after = set((settings.data_dir / "backups").glob("*.tar"))
    assert len(before - after) == 1
    assert all(r["id"] != row["id"] for r in client.get(API, headers=admin).json()["backups"])


def test_restore_brings_back_rows_and_table(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    table = f"t_{secrets.token_hex(3)}"
    _sql(settings, f"create table public.{table} (id int primary key, v text)")
    _sql(settings, f"insert into public.{table} values (1, 'one'), (2, 'two')")
    row = _backup(client, admin)
    later = _backup(client, admin, f"later-{secrets.token_hex(3)}")
    _sql(settings, f"delete from public.{table} where id = 2")
    _sql(settings, f"create table public.{table}_gone (x int)")
    _sql(settings, f"drop table public.{table}_gone")
    dropped = f"{table}_d"
    _sql(settings, f"create table public.{dropped} (x int)")
    restored = client.post(f"{API}/{row['id']}/restore", headers=admin)
    assert restored.status_code == 200, restored.text
    assert restored.json() == {"message": "Database restored successfully"}
    assert _sql(settings, f"select id, v from public.{table} order by id") == [(1, "one"), (2, "two")]
    # Backups made after the one restored are kept, as is the audit trail (with the restore in it).
    ids = {r["id"] for r in client.get(API, headers=admin).json()["backups"]}
    assert later["id"] in ids
    assert (
        _sql(settings, "select count(*) from system.audit_logs where action = 'RESTORE_DATABASE_BACKUP'")[0][
            0
        ]
        >= 1
    )
    # The records API sees the table again (the schema cache was reloaded).
    assert client.get(f"/api/database/records/{table}", headers=admin).status_code == 200


@contextlib.contextmanager
def _restore_held_up(
    client: TestClient, settings: Settings, table: str, backup_id: str
) -> Iterator[Future[None]]:
    """A restore of `backup_id` started in the app, held up (until the block ends) by a lock on `table`,
    which the restore must drop: the block runs while the restore is under way."""
    assert client.portal is not None
    backups = services_of(client).database_backups
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as blocker:
        blocker.execute(f"lock table public.{table} in access share mode")  # (the restore waits for it)
        request = client.portal.start_task_soon(backups.restore, SYSTEM, backup_id)
        deadline = time.monotonic() + 30
        while not _sql(settings, "select 1 from pg_stat_activity where wait_event_type = 'Lock'"):
            assert time.monotonic() < deadline, "the restore never reached the table"
            time.sleep(0.1)
        yield request


def test_a_restore_whose_caller_leaves_finishes_and_is_audited(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    """The restore's thread cannot be stopped once it runs: when the request is cancelled (the client
    left), the restore still ends in its commit, is audited, and holds the work lock until then."""
    table, backup_id = _table_backed_up(client, admin, settings, "(1), (2)")
    _sql(settings, f"delete from public.{table} where id = 2")
    with _restore_held_up(client, settings, table, backup_id) as request:
        request.cancel()
        time.sleep(0.3)
        # Still under way: another restore (or backup) is refused, the lock being held.
        assert client.post(API, headers=admin, json={}).status_code == 409
    deadline = time.monotonic() + 30
    query = (
        "select outcome from system.audit_logs where action = 'RESTORE_DATABASE_BACKUP' "
        f"and details->>'id' = '{backup_id}'"
    )
    while not _sql(settings, query):
        assert time.monotonic() < deadline, "the restore's outcome was never audited"
        time.sleep(0.1)
    assert _sql(settings, query) == [("success",)]
    assert _sql(settings, f"select id from public.{table} order by id") == [(1,), (2,)]


def test_a_table_made_since_with_kilnbases_helpers_does_not_stop_a_restore(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    """A table made after the backup stays, and uses what Kilnbase's migrations made: the tables API's
    `updated_at` trigger (`system.update_updated_at()`), a policy calling `auth.uid()`. The restore must not
    drop and remake those (the same in any backup of these migrations): it could not, while they are used."""
    table = f"since_{secrets.token_hex(3)}"
    backup_id = _backup(client, admin)["id"]
    made = client.post(
        "/api/database/tables",
        headers=admin,
        json={
            "tableName": table,
            "columns": [{"columnName": "owner", "type": "uuid", "isNullable": True, "isUnique": False}],
            "rlsEnabled": True,
        },
    )
    assert made.status_code == 201, made.text
    _sql(settings, f"create policy mine on public.{table} using (owner = auth.uid())")
    restored = client.post(f"{API}/{backup_id}/restore", headers=admin)
    assert restored.status_code == 200, restored.text
    triggers = _sql(settings, f"select count(*) from pg_trigger where tgrelid = 'public.{table}'::regclass")
    assert triggers[0][0] >= 1
    assert ("mine",) in _sql(settings, f"select policyname from pg_policies where tablename = '{table}'")


def test_a_function_the_admin_made_in_kilnbases_schema_and_dropped_since_comes_back(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    """Owner-level SQL may make a function in one of Kilnbase's schemas (a policy helper in `auth`, as many
    apps do): it is the app's, not the migrations', so a backup holding it brings it back, with the policy
    that calls it."""
    helper = f"is_staff_{secrets.token_hex(3)}"
    table = f"t_{secrets.token_hex(3)}"
    _sql(settings, f"create function auth.{helper}() returns boolean language sql stable as 'select true'")
    _sql(settings, f"create table public.{table} (id int primary key)")
    _sql(settings, f"alter table public.{table} enable row level security")
    _sql(settings, f"create policy staff on public.{table} using (auth.{helper}())")
    backup_id = _backup(client, admin)["id"]
    _sql(settings, f"drop function auth.{helper}() cascade")
    restored = client.post(f"{API}/{backup_id}/restore", headers=admin)
    assert restored.status_code == 200, restored.text
    assert _sql(settings, f"select auth.{helper}()") == [(True,)]
    assert ("staff",) in _sql(settings, f"select policyname from pg_policies where tablename = '{table}'")


def test_restore_brings_back_a_dropped_table(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    table, backup_id = _table_backed_up(client, admin, settings, "(7)")
    _sql(settings, f"drop table public.{table}")
    assert client.post(f"{API}/{backup_id}/restore", headers=admin).status_code == 200
    assert _sql(settings, f"select id from public.{table}") == [(7,)]


def test_failed_restore_changes_nothing(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    # Past the failure, the script still has more than a pipe holds (a megabyte of rows): psql stops at the
    # error, and pg_restore, writing the rest to it, must be stopped too (it once waited forever).
    filler = f"filler_{secrets.token_hex(3)}"
    _sql(
        settings,
        f"create table public.{filler} as select repeat('x', 100) as x from generate_series(1, 10000)",
    )
    table, backup_id = _table_backed_up(client, admin, settings, "(1)")
    _sql(settings, f"insert into public.{table} values (2)")
    # A view made since depends on the table: dropping it fails, and the whole restore rolls back.
    _sql(settings, f"create view public.{table}_v as select * from public.{table}")
    failed = client.post(f"{API}/{backup_id}/restore", headers=admin)
    assert failed.status_code == 500, failed.text
    assert "rolled back" in failed.json()["message"]
    assert _sql(settings, f"select id from public.{table} order by id") == [(1,), (2,)]
    assert _sql(settings, f"select count(*) from public.{table}_v") == [(2,)]
    _sql(settings, f"drop view public.{table}_v")
    _sql(settings, f"drop table public.{filler}")


def test_restore_refused_unless_completed(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    failed_id = _sql(
        settings,
        "insert into system.database_backups (status, error_message) "
        "values ('failed', 'x') returning id::text",
    )[0][0]
    refused = client.post(f"{API}/{failed_id}/restore", headers=admin)
    assert refused.status_code == 409
    assert (
        refused.json()["message"] == "This backup is not restorable. Only completed backups can be restored."
    )


def test_interrupted_running_row_shows_failed(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    left = _sql(settings, "insert into system.database_backups default values returning id::text")[0][0]
    refused = client.post(f"{API}/{left}/restore", headers=admin)
    assert refused.status_code == 409
    row = next(r for r in client.get(API, headers=admin).json()["backups"] if r["id"] == left)
    assert row["status"] == "failed" and row["errorMessage"] == "Interrupted by a server restart."


def test_a_backup_while_another_runs_is_refused(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as holder:
        holder.execute("select pg_advisory_lock(hashtext('kilnbase.database_backups'))")
        busy = client.post(API, headers=admin, json={})
        holder.execute("select pg_advisory_unlock(hashtext('kilnbase.database_backups'))")  # (at once)
        assert busy.status_code == 409
        assert busy.json()["message"] == "A restore is currently in progress. Try again once it finishes."


def test_listing_leaves_a_backup_under_way_running(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    """A row `running` while a process holds the work lock is under way, not interrupted: listing reads the
    lock in `pg_locks` (it no longer takes it, which made a backup starting at that moment answer 409)."""
    assert settings.database_url is not None
    insert = "insert into system.database_backups default values returning id::text"
    with psycopg.connect(settings.database_url, autocommit=True) as holder:
        holder.execute("select pg_advisory_lock(hashtext('kilnbase.database_backups'))")
        running = _sql(settings, insert)[0][0]
        row = next(r for r in client.get(API, headers=admin).json()["backups"] if r["id"] == running)
        assert row["status"] == "running"
        # (Released here, not by closing: a closed session's locks go when its backend has exited.)
        holder.execute("select pg_advisory_unlock(hashtext('kilnbase.database_backups'))")
    row = next(r for r in client.get(API, headers=admin).json()["backups"] if r["id"] == running)
    assert row["status"] == "failed" and row["errorMessage"] == "Interrupted by a server restart."


def test_restore_refuses_other_migrations(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    row = _backup(client, admin)
    _sql(settings, "insert into system.migrations (version, name, checksum) values (99999, 'extra', 'x')")
    try:
        refused = client.post(f"{API}/{row['id']}/restore", headers=admin)
    finally:
        _sql(settings, "delete from system.migrations where version = 99999")
    assert refused.status_code == 409 and "other migrations" in refused.json()["message"]


def test_restore_runs_app_functions_as_the_table_owner(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    """An in-place restore runs the backup's own SQL: the app's functions there (a CHECK constraint's) run as
    the role owning the table they guard, never as the superuser running the restore. Otherwise SQL an agent
    key ran as project_admin plants a function a later restore runs as a superuser."""
    agent = agent_headers(client, admin, ["database:read", "database:write"])
    name = f"t_{secrets.token_hex(3)}"
    # As project_admin (the agent's SQL): a CHECK whose function records who runs it, and would do anything a
    # superuser can (here it only proves it could, by writing where project_admin may not).
    planted = client.post(
        "/api/database/advance/rawsql",
        headers=agent,
        json={
            "query": f"""
create function public.{name}_check(v int) returns boolean language plpgsql as $f$
begin
  if (select rolsuper or rolcreaterole from pg_catalog.pg_roles where rolname = current_user) then
    create table if not exists system.{name}_escalated (who text);
  end if;
  return v > 0;
end $f$;
create table public.{name} (v int check (public.{name}_check(v)));
insert into public.{name} values (1), (2);
"""
        },
    )
    assert planted.status_code == 200, planted.text
    backup_id = _backup(client, agent)["id"]
    restored = client.post(f"{API}/{backup_id}/restore", headers=admin)
    assert restored.status_code == 200, restored.text
    assert _sql(settings, f"select v from public.{name} order by v") == [(1,), (2,)]
    # The function ran during the restore, as project_admin: nothing was written as the owner.
    assert _sql(settings, f"select to_regclass('system.{name}_escalated') is null") == [(True,)]
    owner = _sql(settings, f"select tableowner from pg_tables where tablename = '{name}'")
    assert owner == [("project_admin",)]


def test_restore_leaves_the_message_outbox_as_it_is_now(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    """A message queued when the backup was made, and sent since, is not queued again by a restore (it would
    go out twice); one queued after the backup stays queued."""
    queue = (
        "insert into messaging.outbox (channel, payload, max_retries, next_attempt_at) "
        "values ('email', '{}', 3, now() + interval '1 year') returning id::text"
    )
    sent_since = _sql(settings, queue)[0][0]
    backup_id = _backup(client, admin)["id"]
    _sql(settings, f"update messaging.outbox set status = 'sent', sent_at = now() where id = '{sent_since}'")
    queued_after = _sql(settings, queue)[0][0]
    restored = client.post(f"{API}/{backup_id}/restore", headers=admin)
    assert restored.status_code == 200, restored.text
    statuses = _sql(
        settings,
        f"select id::text, status from messaging.outbox where id in ('{sent_since}', '{queued_after}') "
        "order by status",
    )
    assert statuses == [(queued_after, "pending"), (sent_since, "sent")]


def test_restore_keeps_credentials_as_they_are_now(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    """S3 access keys, gateway keys, external JWT providers and Stripe keys deleted or revoked after the
    backup stay so, and those made after it stay too: a restore brings back data, never a credential no
    longer trusted."""
    tag = secrets.token_hex(4)
    s3_gone, s3_new = f"GONE{tag}", f"NEW{tag}"
    inserts = {
        "s3": "insert into storage.s3_access_keys (access_key_id, secret_access_key_encrypted) "
        "values ('{}', 'x')",
        "gateway": "insert into ai.gateway_keys (name, key_hash, key_prefix) values ('{0}', '{0}', 'p')",
        "jwt": "insert into auth.jwt_providers (name, provider_key, issuer, jwks_url) "
        "values ('{0}', '{0}', 'https://{0}.example', 'https://{0}.example/jwks')",
    }
    _sql(settings, inserts["s3"].format(s3_gone))
    _sql(settings, inserts["gateway"].format(f"gw-{tag}"))
    _sql(settings, inserts["jwt"].format(f"gone-{tag}"))
    _sql(
        settings,
        "insert into payments.provider_connections (environment, status) values ('live', 'connected')",
    )
    _sql(
        settings,
        "insert into payments.provider_secrets (environment, secret_key_ciphertext, secret_key_mask) "
        "values ('live', 'x', 'abcd')",
    )
    backup_id = _backup(client, admin)["id"]
    _sql(settings, "delete from payments.provider_secrets where environment = 'live'")
    _sql(settings, "delete from payments.provider_connections where environment = 'live'")
    _sql(settings, f"delete from storage.s3_access_keys where access_key_id = '{s3_gone}'")
    _sql(settings, f"update ai.gateway_keys set revoked_at = now() where name = 'gw-{tag}'")
    _sql(settings, f"delete from auth.jwt_providers where provider_key = 'gone-{tag}'")
    _sql(settings, inserts["s3"].format(s3_new))
    _sql(settings, inserts["jwt"].format(f"new-{tag}"))
    restored = client.post(f"{API}/{backup_id}/restore", headers=admin)
    assert restored.status_code == 200, restored.text
    assert _sql(
        settings, f"select access_key_id from storage.s3_access_keys where access_key_id like '%{tag}'"
    ) == [(s3_new,)]
    assert _sql(settings, f"select revoked_at is not null from ai.gateway_keys where name = 'gw-{tag}'") == [
        (True,)
    ]
    assert _sql(
        settings, f"select provider_key from auth.jwt_providers where provider_key like '%-{tag}'"
    ) == [(f"new-{tag}",)]
    # A Stripe key removed since (a leaked one, say) does not come back.
    assert _sql(settings, "select count(*) from payments.provider_secrets where environment = 'live'") == [
        (0,)
    ]
    assert _sql(
        settings, "select count(*) from payments.provider_connections where environment = 'live'"
    ) == [(0,)]


def test_config_defaults_and_validation(client: TestClient, admin: dict[str, str]) -> None:
    config = client.get(f"{API}/config", headers=admin).json()
    assert set(config) == {"enabled", "cronSchedule", "retentionDays", "nextBackupAt"}
    for body, message in (
        ({}, "At least one field must be provided"),
        ({"cronSchedule": "* * *"}, "cronSchedule must be a standard 5-field cron expression"),
        ({"cronSchedule": "*/5 * * * *"}, "Scheduled backups can run at most once per hour"),
        ({"cronSchedule": "5 99 * * *"}, "cronSchedule is not a valid cron expression."),
        ({"retentionDays": 0}, "retentionDays: Number must be greater than 0"),
        ({"enabled": "yes"}, "enabled: Expected boolean"),
    ):
        response = client.patch(f"{API}/config", headers=admin, json=body)
        assert response.status_code == 400, body
        assert response.json()["message"].startswith(message), response.json()
    assert client.get(f"{API}/config", headers=admin).json() == config
    updated = client.patch(
        f"{API}/config",
        headers=admin,
        json={"enabled": True, "cronSchedule": "30 2 * * *", "retentionDays": None},
    ).json()
    assert updated["enabled"] is True and updated["retentionDays"] is None
    assert updated["nextBackupAt"].endswith("02:30:00Z")
    off = client.patch(f"{API}/config", headers=admin, json={"enabled": False}).json()
    assert off["nextBackupAt"] is None and off["cronSchedule"] == "30 2 * * *"


def test_database_config_holds_the_backup_schedule(client: TestClient, admin: dict[str, str]) -> None:
    """InsForge's newer route, `/api/database/config`: the same schedule as `{backup: {...}}`."""
    config = client.get("/api/database/config", headers=admin)
    assert config.status_code == 200, config.text
    assert config.json() == {"backup": client.get(f"{API}/config", headers=admin).json()}
    bad: list[tuple[dict[str, Any], str]] = [
        ({}, "backup: Required"),
        ({"backup": 1}, "backup: Expected object"),
        ({"backup": {"enabled": True}, "other": {}}, "Unknown field 'other'."),
        ({"backup": {"retentionDays": 0}}, "retentionDays: Number must be greater than 0"),
    ]
    for sent, message in bad:
        refused = client.patch("/api/database/config", headers=admin, json=sent)
        assert refused.status_code == 400, sent
        assert refused.json()["message"] == message or refused.json()["message"].startswith(message)
    assert client.get("/api/database/config", headers=admin).json() == config.json()
    body = {"backup": {"enabled": True, "cronSchedule": "15 3 * * *", "retentionDays": 9}}
    updated = client.patch("/api/database/config", headers=admin, json=body)
    assert updated.status_code == 200, updated.text
    backup = updated.json()["backup"]
    assert (backup["enabled"], backup["cronSchedule"], backup["retentionDays"]) == (True, "15 3 * * *", 9)
    assert client.get(f"{API}/config", headers=admin).json() == backup
    audits = client.get("/api/logs/audits", params={"module": "DATABASE"}, headers=admin).json()
    assert any(a["action"] == "UPDATE_DATABASE_CONFIG" and a["details"]["retentionDays"] == 9 for a in audits)
    client.patch("/api/database/config", headers=admin, json={"backup": {"enabled": False}})


def test_agent_keys(client: TestClient, admin: dict[str, str]) -> None:
    reader = agent_headers(client, admin, ["database:read"])
    assert client.get(API, headers=reader).status_code == 200
    assert client.post(API, headers=reader, json={}).status_code == 403
    writer = agent_headers(client, admin, ["database:write"])
    row = _backup(client, writer)
    assert row["status"] == "completed"
    held = client.post(f"{API}/{row['id']}/restore", headers=writer)
    assert held.status_code == 202, held.text
    assert client.delete(f"{API}/{row['id']}", headers=writer).status_code == 202
    assert any(r["id"] == row["id"] for r in client.get(API, headers=admin).json()["backups"])
    other = agent_headers(client, admin, ["storage:write"])
    assert client.get(API, headers=other).status_code == 403


def test_an_agent_may_not_shorten_retention(client: TestClient, admin: dict[str, str]) -> None:
    """Retention deletes scheduled backups: an agent key, which deletes a backup only with approval, may
    not shorten it on its own (it may lengthen it, or change the rest)."""
    assert client.patch(f"{API}/config", headers=admin, json={"retentionDays": 30}).status_code == 200
    writer = agent_headers(client, admin, ["database:write"])
    for days in (1, 29):
        refused = client.patch(f"{API}/config", headers=writer, json={"retentionDays": days})
        assert refused.status_code == 403, refused.text
        assert "retention" in refused.json()["message"]
    assert client.get(f"{API}/config", headers=admin).json()["retentionDays"] == 30
    assert client.patch(f"{API}/config", headers=writer, json={"retentionDays": 60}).status_code == 200
    assert client.patch(f"{API}/config", headers=writer, json={"retentionDays": None}).status_code == 200
    assert client.patch(f"{API}/config", headers=writer, json={"enabled": False}).status_code == 200
    assert client.patch(f"{API}/config", headers=admin, json={"retentionDays": 7}).status_code == 200


def test_an_agent_may_not_make_scheduled_backups_more_frequent(
    client: TestClient, admin: dict[str, str]
) -> None:
    """An agent key keeps at most KILNBASE_BACKUPS_AGENT_MAX manual backups, since each is a full copy of the
    database; the schedule must not be the way around it. On its own it may not make scheduled backups fire
    more often than they do, or than once a day: an hourly schedule kept forever fills the disk as surely.
    It may keep the admin's schedule, switch it off, or make it rarer."""
    daily = {"enabled": False, "cronSchedule": "0 3 * * *", "retentionDays": 7}
    assert client.patch(f"{API}/config", headers=admin, json=daily).status_code == 200
    writer = agent_headers(client, admin, ["database:write"])
    for body in (
        {"cronSchedule": "0 * * * *", "enabled": True},
        {"enabled": True, "cronSchedule": "0 3,15 * * *"},
    ):
        refused = client.patch(f"{API}/config", headers=writer, json=body)
        assert refused.status_code == 403, refused.text
        assert "more often" in refused.json()["message"]
        refused_too = client.patch("/api/database/config", headers=writer, json={"backup": body})
        assert refused_too.status_code == 403, refused_too.text
    audits = client.get(
        "/api/logs/audits", params={"module": "DATABASE", "limit": "100"}, headers=admin
    ).json()
    refusals = [
        a
        for a in audits
        if a["action"] == "UPDATE_DATABASE_BACKUP_CONFIG"
        and a["outcome"] == "refused"
        and "more often" in a["details"]["error"]
    ]
    assert refusals, audits
    kept = client.get(f"{API}/config", headers=admin).json()
    assert {key: kept[key] for key in daily} == daily
    assert client.patch(f"{API}/config", headers=writer, json={"enabled": True}).status_code == 200
    weekly = client.patch(f"{API}/config", headers=writer, json={"cronSchedule": "0 3 * * 1"})
    assert weekly.status_code == 200, weekly.text
    # An admin's hourly schedule stays the agent's to keep or move within the hour's bound.
    hourly = {"enabled": True, "cronSchedule": "0 * * * *"}
    assert client.patch(f"{API}/config", headers=admin, json=hourly).status_code == 200
    moved = client.patch(f"{API}/config", headers=writer, json={"cronSchedule": "30 * * * *"})
    assert moved.status_code == 200, moved.text
    assert client.patch(f"{API}/config", headers=admin, json=daily).status_code == 200


def _waiting(settings: Settings, wait_type: str) -> bool:
    return bool(_sql(settings, f"select 1 from pg_stat_activity where wait_event = '{wait_type}'"))


def test_a_restore_that_starts_during_a_delete_of_its_backup_is_an_audited_404(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    """A delete of the backup under way (here held up by a row lock) when a restore of it starts: the
    restore waits for the delete, then answers 404 and audits its refusal, instead of unpacking a file the
    delete removes (a 500 nobody audited) or restoring a backup that is gone."""
    _table, backup_id = _table_backed_up(client, admin, settings, "(1)")
    answers: dict[str, Any] = {}

    def call(name: str, method: str) -> None:
        path = f"{API}/{backup_id}" + ("/restore" if name == "restore" else "")
        answers[name] = client.request(method, path, headers=admin)

    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as holder:
        holder.execute("select from system.database_backups where id = %s for update", (backup_id,))
        deleting = threading.Thread(target=call, args=("delete", "DELETE"))
        deleting.start()
        _eventually(lambda: _waiting(settings, "transactionid") or "delete" in answers)
        restoring = threading.Thread(target=call, args=("restore", "POST"))
        restoring.start()
        _eventually(lambda: _waiting(settings, "advisory") or "restore" in answers)
        holder.rollback()
    deleting.join(timeout=60)
    restoring.join(timeout=60)
    assert answers["delete"].status_code == 200, answers["delete"].text
    assert answers["restore"].status_code == 404, answers["restore"].text
    assert answers["restore"].json()["message"] == "Backup not found."
    query = (
        "select outcome from system.audit_logs where action = 'RESTORE_DATABASE_BACKUP' "
        f"and details->>'id' = '{backup_id}'"
    )
    assert _sql(settings, query) == [("refused",)]


def test_a_backup_being_restored_cannot_be_deleted(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    """While a restore runs (held up here by a table lock), deleting its backup is 409 and changes nothing;
    the restore then completes, and the backup can be deleted."""
    table, backup_id = _table_backed_up(client, admin, settings, "(1)")
    with _restore_held_up(client, settings, table, backup_id) as request:
        refused = client.delete(f"{API}/{backup_id}", headers=admin)
        assert refused.status_code == 409, refused.text
        assert refused.json()["message"] == "This backup is being restored and cannot be deleted yet."
    request.result(timeout=60)
    assert any(r["id"] == backup_id for r in client.get(API, headers=admin).json()["backups"])
    assert client.delete(f"{API}/{backup_id}", headers=admin).status_code == 200


def _eventually(probe: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "the awaited state never came"
        time.sleep(0.05)
