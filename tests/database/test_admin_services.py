"""The database admin and key rotation services, called the way the MCP server and the CLI will call them:
built from settings over a fresh database, with no HTTP and no TestClient in between.

Each mutating call is made with an `Actor` whose user agent no other call uses, and its audit entry is then
found through `audit.search` (what `GET /api/logs/audits` answers with): who, what, which module, the outcome,
and the address, user agent, agent key and MCP tool the actor carried. Refusals (a non-admin; owner-level SQL
for a credential whose scopes leave it out) and failures (a statement that fails in the database) are audited
too, and change nothing."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from kilnbase import audit
from kilnbase.config import Settings
from kilnbase.database.admin import DatabaseAdmin
from kilnbase.database.database_errors import DatabaseFailure
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import SYSTEM, Actor
from kilnbase.identity.agent_keys import AgentKey
from kilnbase.identity.principal import ANONYMOUS, CredentialKind, Principal, agent_principal
from kilnbase.keys.project_keys import KeyKind, load_project_keys
from kilnbase.secrets import project_key_rotation
from kilnbase.services import Services, build_core, build_services
from tests.database.conftest import NewName

pytestmark = pytest.mark.anyio

API_KEY = Principal(db_role="project_admin", kind=CredentialKind.API_KEY, claims={"role": "project_admin"})


def session(role: str, email: str, scopes: frozenset[str] = frozenset()) -> Principal:
    """A signed-in caller (a JWT) with this role; `scopes` as an agent key carries them."""
    user_id = str(uuid.uuid4())
    claims = {"sub": user_id, "role": role, "email": email}
    return Principal(
        db_role=role, kind=CredentialKind.JWT, user_id=user_id, email=email, claims=claims, scopes=scopes
    )


ADMIN_SESSION = session("project_admin", "admin@example.com")
USER = session("authenticated", "user@example.com")


def agent(name: str, scopes: frozenset[str]) -> Principal:
    """An agent key's credential: admin rights, but only the scopes it was given."""
    return agent_principal(AgentKey(str(uuid.uuid4()), name, scopes, can_approve=False, expires_at=None))


AGENT = agent("agent", frozenset({"database:read", "database:write"}))
OWNER_AGENT = agent("root-agent", frozenset({"database:owner-sql"}))
WRITER_AGENT = agent("writer", frozenset({"*:write"}))


def actor_for(principal: Principal, **where: Any) -> Actor:
    """An actor whose user agent marks its audit entries as this test's."""
    return Actor(principal, ip="203.0.113.7", user_agent=f"kilnbase-tests/{secrets.token_hex(6)}", **where)


@asynccontextmanager
async def running(settings: Settings, owner_conninfo: str, **overrides: Any) -> AsyncIterator[Services]:
    """The services as `kilnbase serve` builds them, pools open and the schema cache started."""
    small = settings.model_copy(
        update={"db_pool_min": 1, "db_pool_max": 2, "db_owner_pool_max": 2, **overrides}
    )
    core = build_core(small, load_project_keys(small), owner_conninfo)
    async with core.running():
        yield build_services(core)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """One event loop for the module, so that one set of services (as one server holds) serves every test."""
    return "asyncio"


@pytest.fixture(scope="module")
async def services(settings: Settings, database_url: str) -> AsyncIterator[Services]:
    async with running(settings, database_url) as built:
        yield built


async def audited(services: Services, actor: Actor, action: str | None = None) -> list[dict[str, Any]]:
    """The audit entries this actor left (of `action`), oldest first, as `GET /api/logs/audits` shows
    them."""
    entries, total = await audit.search(services.core.database, limit=1000, offset=0, action=action)
    assert total <= 1000, "more entries than one page: narrow the search"
    return [e for e in reversed(entries) if e["userAgent"] == actor.user_agent]


async def the_entry(
    services: Services, actor: Actor, action: str, module: str, outcome: str
) -> dict[str, Any]:
    """The one entry `actor` left for `action`, checked against the actor; its details."""
    entries = await audited(services, actor, action)
    assert len(entries) == 1, entries
    entry = entries[0]
    assert (entry["actor"], entry["module"], entry["outcome"]) == (actor.name, module, outcome)
    assert (entry["ipAddress"], entry["userAgent"]) == (actor.ip, actor.user_agent)
    assert (entry["agentKey"], entry["tool"]) == (actor.agent_key, actor.tool)
    details: dict[str, Any] = entry["details"]
    return details


async def tables(services: Services) -> list[str]:
    return await services.database.list_tables(actor_for(API_KEY))


async def make_table(services: Services, table: str) -> None:
    """A table with one row, made by an actor of its own (so its entries do not mix with the test's)."""
    script = (
        f"create table {table} (sku text primary key, name text); insert into {table} values ('a-1', 'A')"
    )
    await services.database.raw_sql(actor_for(API_KEY), script, [])


async def rows_of(services: Services, table: str) -> list[dict[str, Any]]:
    result = await services.database.raw_sql(actor_for(API_KEY), f"select * from {table} order by sku", [])
    return result.rows


# --- each mutating call, audited ---------------------------------------------------------------------------


async def test_table_ddl_is_audited_and_reloads_the_schema_cache(
    services: Services, new_name: NewName
) -> None:
    actor = actor_for(ADMIN_SESSION)
    table = new_name("notes")
    admin = services.database
    body = {"tableName": table, "columns": [{"columnName": "title", "type": "string"}]}
    created = await admin.create_table(actor, body)
    assert created["tableName"] == table
    assert set(services.core.schema_cache.snapshot.tables[("public", table)].columns) == {
        "id",
        "title",
        "created_at",
        "updated_at",
    }
    assert await the_entry(services, actor, "CREATE_TABLE", "DATABASE", "success") == {
        "table": table,
        "columns": ["title"],
    }

    await admin.update_table(actor, table, {"addColumns": [{"columnName": "pages", "type": "integer"}]})
    assert "pages" in services.core.schema_cache.snapshot.tables[("public", table)].columns
    assert await the_entry(services, actor, "UPDATE_TABLE", "DATABASE", "success") == {
        "table": table,
        "operations": ["Added column: pages"],
    }

    await admin.delete_table(actor, table)
    assert ("public", table) not in services.core.schema_cache.snapshot.tables
    assert table not in await tables(services)
    assert await the_entry(services, actor, "DELETE_TABLE", "DATABASE", "success") == {"table": table}
    assert [e["actor"] for e in await audited(services, actor)] == ["admin@example.com"] * 3


async def test_raw_sql_runs_as_project_admin_and_is_audited(services: Services, new_name: NewName) -> None:
    actor = actor_for(WRITER_AGENT, tool="run-raw-sql")
    gadgets = new_name("gadgets")
    await services.database.raw_sql(actor, f"create table {gadgets} (n int)", [])
    assert ("public", gadgets) in services.core.schema_cache.snapshot.tables
    query = f"insert into {gadgets} values ($1) returning current_user as who, n"
    result = await services.database.raw_sql(actor, query, [7])
    assert result.rows == [{"who": "project_admin", "n": 7}]
    assert result.row_count == 1
    entries = await audited(services, actor)
    assert [(e["action"], e["outcome"], e["details"]["query"]) for e in entries] == [
        ("EXECUTE_RAW_SQL", "success", f"create table {gadgets} (n int)"),
        ("EXECUTE_RAW_SQL", "success", query),
    ]
    assert entries[1]["details"] == {
        "query": query,
        "paramCount": 1,
        "executionRole": "project_admin",
        "rowsAffected": 1,
    }
    assert (entries[1]["agentKey"], entries[1]["tool"], entries[1]["actor"]) == (
        actor.agent_key,
        "run-raw-sql",
        "agent:writer",
    )

    explainer = actor_for(API_KEY)
    plan = await services.database.raw_sql(explainer, f"select * from {gadgets}", [], explain=True)
    assert plan.rows[0]["QUERY PLAN"][0]["Plan"]["Actual Rows"] == 1
    details = await the_entry(services, explainer, "EXPLAIN_RAW_SQL", "DATABASE", "success")
    assert details["executionRole"] == "project_admin"


async def test_unrestricted_raw_sql_runs_as_owner_and_is_audited(
    services: Services, database_url: str, new_name: NewName
) -> None:
    actor = actor_for(API_KEY)
    owned = new_name("owned")
    script = f"create table {owned} (id int); select current_user as who"
    result = await services.database.raw_sql(actor, script, [], unrestricted=True)
    assert result.rows == [{"who": conninfo_to_dict(database_url)["user"]}]
    details = await the_entry(services, actor, "EXECUTE_RAW_SQL_UNRESTRICTED", "DATABASE", "success")
    assert details == {"query": script, "paramCount": 0, "executionRole": "owner", "rowsAffected": 1}
    schema = await services.database.table_schema(actor_for(API_KEY), owned)
    assert [c["columnName"] for c in schema["columns"]] == ["id"]


async def test_bulk_upsert_export_and_import_are_audited(services: Services, new_name: NewName) -> None:
    items = new_name("items")
    await make_table(services, items)
    actor = actor_for(ADMIN_SESSION)
    admin = services.database
    upserted = await admin.bulk_upsert(
        actor,
        schema="public",
        table=items,
        content=b"sku,name\na-1,Anvil\nb-2,Bucket\n",
        filename="items.csv",
        upsert_key="sku",
    )
    assert upserted["rowsAffected"] == 2
    assert await the_entry(services, actor, "BULK_UPSERT", "DATABASE", "success") == {
        "table": items,
        "filename": "items.csv",
        "rowsAffected": 2,
    }

    exported = await admin.export(actor, {"format": "sql", "tables": [items]})
    assert f'INSERT INTO "{items}" ("sku", "name") VALUES (\'b-2\', \'Bucket\');' in exported["data"]
    assert await the_entry(services, actor, "EXPORT_DATABASE", "DATABASE", "success") == {"format": "sql"}

    dump = f"insert into {items} values ('c-3', 'Crate'), ('d-4', 'Drum')".encode()
    imported = await admin.import_sql(actor, dump, "more.sql", truncate=True)
    assert imported["rowsImported"] == 2
    assert [r["sku"] for r in await rows_of(services, items)] == ["c-3", "d-4"]
    assert await the_entry(services, actor, "IMPORT_DATABASE", "DATABASE", "success") == {
        "filename": "more.sql",
        "truncate": True,
        "rowsImported": 2,
    }


async def test_apply_migration_is_audited(
    services: Services, new_name: NewName, new_version: Callable[[], str]
) -> None:
    actor = actor_for(API_KEY)
    table, version = new_name("widgets"), new_version()
    body = {"version": version, "name": "add-widgets", "sql": f"create table {table} (id int); select 1"}
    applied = await services.database.apply_migration(actor, body)
    assert applied["statements"] == [f"create table {table} (id int)", "select 1"]
    assert ("public", table) in services.core.schema_cache.snapshot.tables
    listed = (await services.database.list_migrations(actor_for(API_KEY)))["migrations"]
    assert version in [m["version"] for m in listed]
    assert await the_entry(services, actor, "APPLY_MIGRATION", "DATABASE", "success") == {
        "version": version,
        "name": "add-widgets",
        "statementCount": 2,
    }


@pytest.mark.parametrize(("kind", "action"), [("api_key", "ROTATE_API_KEY"), ("anon_key", "ROTATE_ANON_KEY")])
async def test_key_rotation_is_audited(services: Services, kind: KeyKind, action: str) -> None:
    actor = actor_for(ADMIN_SESSION)
    rotated = await services.key_rotation.rotate(actor, kind, 2)
    assert rotated.key.startswith("ik_" if kind == "api_key" else "anon_")
    loaded = await project_key_rotation.load(services.core.database, services.core.secret_box)
    assert loaded is not None
    current, previous = loaded
    assert current[kind] == rotated.key
    # The key it replaced stays in force for the grace period (two hours), then expires.
    grace = rotated.previous_expires_at - datetime.now(UTC)
    assert timedelta(hours=1, minutes=59) < grace <= timedelta(hours=2)
    ends = rotated.previous_expires_at.timestamp()
    assert [
        key for key, expires in previous[kind] if abs(expires - ends) < 0.001 and key != rotated.key
    ] != []
    assert await the_entry(services, actor, action, "SECRETS", "success") == {"gracePeriodHours": 2}


# --- refused and failed calls, audited ---------------------------------------------------------------------

Call = Callable[[DatabaseAdmin, Actor, str, str], Awaitable[Any]]

#: Every mutating call of the database admin service, on an existing table `t` (one row) and a new name `n`.
MUTATIONS: dict[str, Call] = {
    "CREATE_TABLE": lambda admin, actor, t, n: admin.create_table(
        actor, {"tableName": n, "columns": [{"columnName": "x", "type": "string"}]}
    ),
    "UPDATE_TABLE": lambda admin, actor, t, n: admin.update_table(
        actor, t, {"addColumns": [{"columnName": "x", "type": "string"}]}
    ),
    "DELETE_TABLE": lambda admin, actor, t, n: admin.delete_table(actor, t),
    "EXECUTE_RAW_SQL": lambda admin, actor, t, n: admin.raw_sql(actor, f"create table {n} (id int)", []),
    "EXECUTE_RAW_SQL_UNRESTRICTED": lambda admin, actor, t, n: admin.raw_sql(
        actor, f"create table {n} (id int)", [], unrestricted=True
    ),
    "BULK_UPSERT": lambda admin, actor, t, n: admin.bulk_upsert(
        actor, schema="public", table=t, content=b"sku,name\nz-9,Z\n", filename="x.csv", upsert_key=None
    ),
    "EXPORT_DATABASE": lambda admin, actor, t, n: admin.export(actor, {"tables": [t]}),
    "IMPORT_DATABASE": lambda admin, actor, t, n: admin.import_sql(
        actor, f"create table {n} (id int); insert into {t} values ('z-9', 'Z')".encode(), "x.sql", True
    ),
    "APPLY_MIGRATION": lambda admin, actor, t, n: admin.apply_migration(
        actor,
        {"version": str(secrets.randbelow(10**15)), "name": "refused", "sql": f"create table {n} (id int)"},
    ),
}


async def unchanged(services: Services, table: str, new: str) -> None:
    """The existing table as `make_table` left it; the new one never made."""
    assert new not in await tables(services)
    columns = (await services.database.table_schema(actor_for(API_KEY), table))["columns"]
    assert [c["columnName"] for c in columns] == ["sku", "name"]
    assert await rows_of(services, table) == [{"sku": "a-1", "name": "A"}]


@pytest.mark.parametrize("action", sorted(MUTATIONS))
@pytest.mark.parametrize("principal", [USER, ANONYMOUS], ids=["user", "anonymous"])
async def test_non_admin_is_refused_and_the_refusal_audited(
    services: Services, new_name: NewName, action: str, principal: Principal
) -> None:
    table, new = new_name("kept"), new_name("never")
    await make_table(services, table)
    actor = actor_for(principal)
    with pytest.raises(ApiError) as refused:
        await MUTATIONS[action](services.database, actor, table, new)
    # As InsForge's `verifyAdmin` refuses each (`http.errors.not_admin`): no credential, a user's token.
    wanted = (401, "AUTH_INVALID_CREDENTIALS") if principal is ANONYMOUS else (403, "AUTH_UNAUTHORIZED")
    assert (refused.value.status, refused.value.code) == wanted
    assert not isinstance(refused.value, DatabaseFailure)
    details = await the_entry(services, actor, action, "DATABASE", "refused")
    assert details["error"] == refused.value.message
    await unchanged(services, table, new)


@pytest.mark.parametrize(
    ("action", "status", "code", "call"),
    [
        (
            "CREATE_TABLE",
            404,
            "DATABASE_NOT_FOUND",
            lambda admin, actor, t, n: admin.create_table(
                actor,
                {
                    "tableName": n,
                    "columns": [
                        {"columnName": "x", "type": "uuid", "foreignKey": {"referenceTable": f"{n}_gone"}}
                    ],
                },
            ),
        ),
        (
            "UPDATE_TABLE",
            400,
            "DATABASE_VALIDATION_ERROR",
            lambda admin, actor, t, n: admin.update_table(
                actor,
                t,
                {"addColumns": [{"columnName": "x", "type": "int"}], "dropColumns": ["no_such_column"]},
            ),
        ),
        (
            "EXECUTE_RAW_SQL",
            404,
            "DATABASE_NOT_FOUND",
            lambda admin, actor, t, n: admin.raw_sql(
                actor, f"create table {n} (id int); select * from {n}_gone", []
            ),
        ),
        (
            "EXECUTE_RAW_SQL_UNRESTRICTED",
            400,
            "DATABASE_VALIDATION_ERROR",
            lambda admin, actor, t, n: admin.raw_sql(
                actor, f"create table {n} (id int); select 1 / 0", [], unrestricted=True
            ),
        ),
        (
            "BULK_UPSERT",
            409,
            "DATABASE_DUPLICATE",
            lambda admin, actor, t, n: admin.bulk_upsert(
                actor,
                schema="public",
                table=t,
                content=b"sku,name\na-1,again\n",
                filename="x.csv",
                upsert_key=None,
            ),
        ),
        (
            "IMPORT_DATABASE",
            404,
            "DATABASE_NOT_FOUND",
            lambda admin, actor, t, n: admin.import_sql(
                actor,
                f"insert into {t} values ('z-9', 'Z'); insert into {n}_gone values (1)".encode(),
                "x.sql",
                False,
            ),
        ),
        (
            "APPLY_MIGRATION",
            404,
            "DATABASE_NOT_FOUND",
            lambda admin, actor, t, n: admin.apply_migration(
                actor,
                {
                    "version": str(secrets.randbelow(10**15)),
                    "name": "fails",
                    "sql": f"create table {n} (id int); insert into {n}_gone values (1)",
                },
            ),
        ),
    ],
)
async def test_failing_statement_is_audited_as_failed(
    services: Services, new_name: NewName, action: str, status: int, code: str, call: Call
) -> None:
    table, new = new_name("kept"), new_name("never")
    await make_table(services, table)
    actor = actor_for(API_KEY)
    with pytest.raises(DatabaseFailure) as failed:
        await call(services.database, actor, table, new)
    assert (failed.value.status, failed.value.code) == (status, code)
    details = await the_entry(services, actor, action, "DATABASE", "failed")
    assert details["error"] == failed.value.message
    await unchanged(services, table, new)


async def test_owner_sql_is_refused_to_credentials_without_its_scope(
    services: Services, new_name: NewName
) -> None:
    owned = new_name("owned")
    agent = actor_for(AGENT, tool="run-raw-sql")
    with pytest.raises(ApiError) as refused:
        await services.database.raw_sql(agent, f"create table {owned} (id int)", [], unrestricted=True)
    assert (refused.value.status, refused.value.code) == (403, "DATABASE_FORBIDDEN")
    details = await the_entry(services, agent, "EXECUTE_RAW_SQL_UNRESTRICTED", "DATABASE", "refused")
    assert details["error"] == refused.value.message
    assert owned not in await tables(services)
    # The same credential still runs SQL as project_admin.
    result = await services.database.raw_sql(agent, "select current_user as who", [])
    assert result.rows == [{"who": "project_admin"}]
    assert (await the_entry(services, agent, "EXECUTE_RAW_SQL", "DATABASE", "success"))["executionRole"] == (
        "project_admin"
    )
    # A credential given the scope, and Kilnbase itself, may run owner-level SQL.
    for allowed in (actor_for(OWNER_AGENT), SYSTEM):
        result = await services.database.raw_sql(
            allowed, "select current_user <> 'project_admin' as owner", [], unrestricted=True
        )
        assert result.rows == [{"owner": True}]


async def test_statement_timeouts_are_the_admins(settings: Settings, database_url: str) -> None:
    async with running(settings, database_url, db_admin_statement_timeout="150ms") as services:
        for unrestricted in (False, True):
            actor = actor_for(API_KEY)
            with pytest.raises(DatabaseFailure) as failed:
                await services.database.raw_sql(actor, "select pg_sleep(2)", [], unrestricted=unrestricted)
            assert (failed.value.status, failed.value.code) == (400, "DATABASE_VALIDATION_ERROR")
            assert "statement timeout" in failed.value.message
            action = "EXECUTE_RAW_SQL_UNRESTRICTED" if unrestricted else "EXECUTE_RAW_SQL"
            await the_entry(services, actor, action, "DATABASE", "failed")
        quick = await services.database.raw_sql(actor_for(API_KEY), "select pg_sleep(0.01), 1 as done", [])
        assert quick.rows[0]["done"] == 1


async def test_refused_key_rotation_is_audited(services: Services) -> None:
    actor = actor_for(USER)
    with pytest.raises(ApiError) as refused:
        await services.key_rotation.rotate(actor, "api_key", 1)
    assert refused.value.status == 403
    await the_entry(services, actor, "ROTATE_API_KEY", "SECRETS", "refused")


async def test_raw_sql_session_settings_end_with_the_request(
    settings: Settings, database_url: str, new_name: NewName
) -> None:
    table = new_name("notes")
    # One request connection, so the next request surely gets the connection the SET ran on.
    async with running(settings, database_url, db_pool_max=1) as services:
        await make_table(services, table)
        await services.database.raw_sql(actor_for(API_KEY), "set default_transaction_read_only = on", [])
        later = actor_for(ADMIN_SESSION)
        await services.database.raw_sql(later, f"insert into {table} values ('b-2', 'B')", [])
        assert [r["sku"] for r in await rows_of(services, table)] == ["a-1", "b-2"]
