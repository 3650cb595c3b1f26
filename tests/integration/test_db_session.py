"""The per-request session: role and claims reach Postgres; RLS closes new tables; owner work is explicit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from kilnbase import audit
from kilnbase.config import Settings
from kilnbase.db.roles import AUTHENTICATOR
from kilnbase.db.session import Database
from kilnbase.identity.actor import Actor
from kilnbase.identity.principal import ANONYMOUS, CredentialKind, Principal
from tests.support.postgres import database_for

pytestmark = pytest.mark.anyio

ADMIN = Principal(db_role="project_admin", kind=CredentialKind.API_KEY, claims={"role": "project_admin"})


def user(user_id: str, email: str) -> Principal:
    claims = {"sub": user_id, "role": "authenticated", "email": email}
    return Principal(
        db_role="authenticated", kind=CredentialKind.JWT, user_id=user_id, email=email, claims=claims
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = database_for(database_url)
    await database.open()
    yield database
    await database.close()


async def test_caller_role_and_claims_reach_sql_helpers(db: Database) -> None:
    user_id = str(uuid.uuid4())
    async with db.as_caller(user(user_id, "ada@example.com")) as cur:
        await cur.execute(
            "select current_user as who, auth.uid()::text as uid, auth.role() as role, "
            "auth.email() as email, "
            "auth.jwt() ->> 'email' as jwt_email"
        )
        row = await cur.fetchone()
    assert row == {
        "who": "authenticated",
        "uid": user_id,
        "role": "authenticated",
        "email": "ada@example.com",
        "jwt_email": "ada@example.com",
    }


async def test_anon_has_no_uid_and_settings_do_not_leak_between_requests(db: Database) -> None:
    async with db.as_caller(user(str(uuid.uuid4()), "x@example.com")) as cur:
        await cur.execute("select 1")
    for _ in range(4):  # the pool hands the same connections back
        async with db.as_caller(ANONYMOUS) as cur:
            await cur.execute("select current_user as who, auth.uid() as uid, auth.email() as email")
            assert await cur.fetchone() == {"who": "anon", "uid": None, "email": None}


async def test_third_party_subject_that_is_not_a_uuid_gives_null_uid(db: Database) -> None:
    async with db.as_caller(user("user_2abcClerk", "c@example.com")) as cur:
        await cur.execute("select auth.uid() as uid, auth.jwt() ->> 'sub' as sub")
        assert await cur.fetchone() == {"uid": None, "sub": "user_2abcClerk"}


async def test_read_only_session_refuses_writes(db: Database) -> None:
    async with db.as_owner() as cur:
        await cur.execute("create table public.ro_probe (id int)")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        async with db.as_caller(ADMIN, read_only=True) as cur:
            await cur.execute("insert into public.ro_probe values (1)")
            await cur.fetchall()


async def test_a_request_can_never_run_as_another_role(db: Database) -> None:
    rogue = Principal(db_role="postgres", kind=CredentialKind.JWT, claims={"role": "postgres"})
    with pytest.raises(ValueError, match="refusing"):
        async with db.as_caller(rogue):
            pass


async def test_new_tables_are_closed_until_a_policy_opens_them(db: Database) -> None:
    # Created as project_admin, the way raw SQL from the API runs.
    async with db.as_caller(ADMIN) as cur:
        await cur.execute("create table public.notes (id serial primary key, owner uuid, body text)")
        await cur.execute("insert into public.notes (owner, body) values (gen_random_uuid(), 'secret')")
    async with db.as_owner() as cur:
        await cur.execute(
            "select c.relrowsecurity as rls, array_agg(p.polname::text) as policies from pg_class c "
            "left join pg_policy p on p.polrelid = c.oid where c.oid = 'public.notes'::regclass group by 1"
        )
        assert await cur.fetchone() == {"rls": True, "policies": ["project_admin_policy"]}
    alice = user(str(uuid.uuid4()), "alice@example.com")
    for caller in (ANONYMOUS, alice):
        async with db.as_caller(caller) as cur:
            await cur.execute("select count(*) as n from public.notes")
            assert await cur.fetchone() == {"n": 0}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            async with db.as_caller(caller) as cur:
                await cur.execute("insert into public.notes (body) values ('mine')")
    async with db.as_caller(ADMIN) as cur:
        await cur.execute("select count(*) as n from public.notes")
        assert await cur.fetchone() == {"n": 1}
    # A policy opens it, and auth.uid() decides which rows.
    async with db.as_caller(ADMIN) as cur:
        await cur.execute(
            "create policy own_rows on public.notes for all to authenticated "
            "using (owner = auth.uid()) with check (owner = auth.uid())"
        )
    async with db.as_caller(alice) as cur:
        await cur.execute("insert into public.notes (owner, body) values (auth.uid(), 'alice') returning id")
        await cur.execute("select body from public.notes")
        assert await cur.fetchall() == [{"body": "alice"}]


async def test_tables_created_by_the_owner_are_closed_too(db: Database) -> None:
    async with db.as_owner() as cur:
        await cur.execute("create table public.owner_made as select 1 as x")
    async with db.as_caller(ANONYMOUS) as cur:
        await cur.execute("select count(*) as n from public.owner_made")
        assert await cur.fetchone() == {"n": 0}


async def test_enabling_rls_by_hand_adds_the_admin_policy(db: Database) -> None:
    async with db.as_owner() as cur:
        await cur.execute("create table public.later (id int)")
        await cur.execute("drop policy project_admin_policy on public.later")
        await cur.execute("alter table public.later disable row level security")
        await cur.execute("alter table public.later enable row level security")
        await cur.execute("select count(*) as n from pg_policy where polrelid = 'public.later'::regclass")
        assert await cur.fetchone() == {"n": 1}


async def test_audit_record_is_written_with_its_transaction(db: Database) -> None:
    actor = Actor(ADMIN, ip="127.0.0.1", user_agent="probe/1")
    module = f"test-{uuid.uuid4().hex[:8]}"
    async with db.as_owner() as cur:
        await audit.record(cur, actor, "CREATE_TABLE", module, {"table": "t"})
    with pytest.raises(RuntimeError):
        async with db.as_owner() as cur:
            await audit.record(cur, actor, "ROLLED_BACK", module)
            raise RuntimeError("the change failed")
    rows, total = await audit.search(db, limit=10, offset=0, module=module)
    assert total == 1 and rows[0]["action"] == "CREATE_TABLE" and rows[0]["ipAddress"] == "127.0.0.1"
    assert rows[0]["details"] == {"table": "t"} and rows[0]["actor"] == "api-key"
    assert rows[0]["userAgent"] == "probe/1" and rows[0]["outcome"] == "success"


async def test_results_are_read_after_the_block_and_failures_leave_the_connection_clean(
    database_url: str,
) -> None:
    # One request connection, so every block below reuses the one before it.
    single = database_for(database_url, Settings(db_pool_min=1, db_pool_max=1))
    pool = single.request_pool
    await single.open()
    try:
        async with single.as_owner() as cur:
            await cur.execute("create table public.tx_probe (id int primary key)")
            await cur.execute("grant all on public.tx_probe to project_admin")
        async with single.as_caller(ADMIN) as cur:
            await cur.execute("insert into public.tx_probe values (1) returning id")
        assert await cur.fetchone() == {"id": 1}  # committed, and the row is still on the cursor
        with pytest.raises(RuntimeError, match="after the write"):
            async with single.as_caller(ADMIN) as cur:
                await cur.execute("insert into public.tx_probe values (2)")
                raise RuntimeError("after the write")
        with pytest.raises(psycopg.errors.UniqueViolation):
            async with single.as_caller(ADMIN) as cur:
                await cur.execute("insert into public.tx_probe values (3)")
                await cur.execute("insert into public.tx_probe values (1)")
        async with single.as_caller(ANONYMOUS, read_only=True) as cur:
            await cur.execute("select current_user as who, current_setting('transaction_read_only') as ro")
        assert await cur.fetchone() == {"who": "anon", "ro": "on"}
        async with single.as_caller(ADMIN) as cur:
            await cur.execute("select array_agg(id order by id) as ids from public.tx_probe")
        assert await cur.fetchone() == {"ids": [1]}  # 2 and 3 were rolled back
        async with pool.connection() as conn:
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        await single.close()


async def test_one_statement_runs_as_the_caller_in_a_transaction_of_its_own(database_url: str) -> None:
    # One request connection: the statement after reuses the connection the one before used.
    single = database_for(database_url, Settings(db_pool_min=1, db_pool_max=1))
    await single.open()
    user_id = str(uuid.uuid4())
    try:
        cur = await single.statement_as_caller(
            user(user_id, "ada@example.com"),
            "select current_user as who, auth.uid()::text as uid, auth.email() as email, "
            "current_setting('transaction_read_only') as ro, now() < statement_timestamp() as after_context",
            (),
        )
        assert await cur.fetchone() == {
            "who": "authenticated",
            "uid": user_id,
            "email": "ada@example.com",
            "ro": "off",
            # the context's statement started the transaction: the caller's statement is in the same one
            "after_context": True,
        }
        cur = await single.statement_as_caller(
            ANONYMOUS,
            "select current_user as who, auth.uid() as uid, current_setting('transaction_read_only') as ro",
            (),
            read_only=True,
        )
        assert await cur.fetchone() == {"who": "anon", "uid": None, "ro": "on"}
        async with single.request_pool.connection() as conn:  # nothing of either caller is left behind
            row = await (
                await conn.execute("select current_user, current_setting('request.jwt.claims')")
            ).fetchone()
            assert row == (AUTHENTICATOR, "")
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        await single.close()


async def test_one_statement_commits_or_leaves_nothing(db: Database) -> None:
    table = f"public.one_statement_{uuid.uuid4().hex[:12]}"
    async with db.as_owner() as cur:
        await cur.execute(f"create table {table} (id int primary key)")
        await cur.execute(f"grant all on {table} to project_admin")
    cur = await db.statement_as_caller(ADMIN, f"insert into {table} values (%s), (%s) returning id", (1, 2))
    assert await cur.fetchall() == [{"id": 1}, {"id": 2}]
    with pytest.raises(psycopg.errors.UniqueViolation):  # the second row fails: the first is undone with it
        await db.statement_as_caller(ADMIN, f"insert into {table} values (%s), (%s)", (3, 1))
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        await db.statement_as_caller(ADMIN, f"insert into {table} values (%s)", (4,), read_only=True)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        await db.statement_as_caller(ANONYMOUS, f"insert into {table} values (%s)", (5,))
    cur = await db.statement_as_caller(ADMIN, f"select array_agg(id order by id) as ids from {table}", ())
    assert await cur.fetchone() == {"ids": [1, 2]}


async def test_one_statement_keeps_the_role_statement_timeout(database_url: str) -> None:
    timed = database_for(database_url)
    timed.statement_timeouts["anon"] = "50ms"
    await timed.open()
    try:
        with pytest.raises(psycopg.errors.QueryCanceled):
            await timed.statement_as_caller(ANONYMOUS, "select pg_sleep(2)", ())
    finally:
        await timed.close()


async def test_one_statement_refuses_any_other_role(db: Database) -> None:
    rogue = Principal(db_role="postgres", kind=CredentialKind.JWT, claims={"role": "postgres"})
    with pytest.raises(ValueError, match="refusing"):
        await db.statement_as_caller(rogue, "select 1", ())
