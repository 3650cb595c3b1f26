"""The authenticator: the one login role requests use, and nothing more (PostgREST's model).

It is NOINHERIT and a member of anon, authenticated and project_admin only, so a request becomes one of
them with `SET LOCAL ROLE`, and SQL that steps back out (`RESET ROLE`, `set_config('role', 'none', ...)`)
lands on a role with no privileges at all. Migration 0041 creates it; `prepare_authenticator` gives it its
password at every start, as the owner.

Its password is derived from the owner's (HMAC, so the owner's cannot be recovered from it): every database
of one cluster then agrees on it, however many projects or test databases share the cluster. An operator who
manages the role themselves sets `KILNBASE_DB_AUTHENTICATOR_PASSWORD`, and Kilnbase leaves the role alone.

`grant_schema_creation` gives project_admin the right to create schemas in the project's database, at every
start too (see there why not in a migration).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from kilnbase.config import Settings
from kilnbase.keys.project_keys import ProjectKeys

AUTHENTICATOR = "kilnbase_authenticator"
REQUEST_ROLES = ("anon", "authenticated", "project_admin")

#: What an operator runs once when the `DATABASE_URL` user may not create roles (docs/security.md).
OPERATOR_STATEMENT = (
    f"CREATE ROLE {AUTHENTICATOR} LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '<password>'; "
    f"GRANT anon, authenticated, project_admin TO {AUTHENTICATOR};"
)


class AuthenticatorError(RuntimeError):
    """The authenticator role is missing or cannot log in; the message says what to run."""


def derived_password(owner_conninfo: str, fallback_secret: str) -> str:
    """The authenticator's password: from the owner's password, or from `fallback_secret` when the owner logs
    in without one (peer or trust authentication)."""
    owner_password = conninfo_to_dict(owner_conninfo).get("password") or fallback_secret
    return hmac.new(str(owner_password).encode(), b"kilnbase:authenticator:v1", hashlib.sha256).hexdigest()


def authenticator_conninfo(owner_conninfo: str, password: str) -> str:
    """The owner's connection string, logging in as the authenticator instead."""
    return make_conninfo(owner_conninfo, user=AUTHENTICATOR, password=password)


def authenticator_password(settings: Settings, keys: ProjectKeys, owner_conninfo: str) -> str:
    """The operator's password for the role when one is set, else the derived one."""
    return settings.db_authenticator_password or derived_password(owner_conninfo, keys.postgres_password)


def request_conninfo(settings: Settings, keys: ProjectKeys, owner_conninfo: str) -> str:
    """Where the request pool connects: the owner's database, as the authenticator."""
    return authenticator_conninfo(owner_conninfo, authenticator_password(settings, keys, owner_conninfo))


def prepare_authenticator(owner_conninfo: str, password: str, *, managed_by_operator: bool) -> None:
    """Make sure the role logs in with `password` (setting it, unless an operator manages the role), then
    prove it is what it must be: not a superuser, not inheriting, a member of the three request roles and of
    nothing else.

    The password is set only when logging in with it fails, so processes starting together (granian's
    workers, several servers on one cluster) do not all rewrite the role; when they do, one at a time, and the
    text sent is libpq's SCRAM verifier, never the password itself."""
    with psycopg.connect(owner_conninfo, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("select 1 from pg_roles where rolname = %s", (AUTHENTICATOR,)).fetchone()
        if exists is None:
            raise AuthenticatorError(
                f"The role {AUTHENTICATOR} does not exist and could not be created. Run, as a superuser: "
                + OPERATOR_STATEMENT
            )
        if not managed_by_operator and _attributes(owner_conninfo, password) is None:
            _set_password(conn, password)
    row = _attributes(owner_conninfo, password)
    if row is None:
        raise AuthenticatorError(
            f"Cannot log in as {AUTHENTICATOR}. Check KILNBASE_DB_AUTHENTICATOR_PASSWORD and pg_hba.conf."
        )
    superuser, inherit, createrole, createdb, bypassrls, member_of = row
    if (
        superuser
        or inherit
        or createrole
        or createdb
        or bypassrls
        or sorted(member_of) != sorted(REQUEST_ROLES)
    ):
        member = ", ".join(member_of) or "none"
        raise AuthenticatorError(
            f"The role {AUTHENTICATOR} must be a NOINHERIT login role with no other attributes, a member of "
            f"{', '.join(REQUEST_ROLES)} and of nothing else (it is a member of {member})."
        )


def _attributes(owner_conninfo: str, password: str) -> tuple[Any, ...] | None:
    """The role's attributes and memberships, read while logged in as it; None when it cannot log in."""
    try:
        with psycopg.connect(authenticator_conninfo(owner_conninfo, password), connect_timeout=10) as conn:
            return conn.execute(
                "select r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls, "
                "array(select g.rolname::text from pg_auth_members m join pg_roles g on g.oid = m.roleid "
                "where m.member = r.oid order by 1) from pg_roles r where r.rolname = current_user"
            ).fetchone()
    except psycopg.OperationalError:
        return None


def _set_password(conn: psycopg.Connection[Any], password: str) -> None:
    verifier = conn.pgconn.encrypt_password(password.encode(), AUTHENTICATOR.encode(), b"scram-sha-256")
    statement = sql.SQL("alter role {} with login password {}").format(
        sql.Identifier(AUTHENTICATOR), sql.Literal(verifier.decode())
    )
    # Role rows are the cluster's: two databases' starts may still meet here, and Postgres then refuses one
    # with "tuple concurrently updated" (the lock serialises the starts of one database). The one refused
    # finds the password set by the other when it logs in next.
    with contextlib.suppress(psycopg.errors.InternalError_), conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('kilnbase.authenticator'))")
        conn.execute(statement)


def grant_schema_creation(owner_conninfo: str) -> None:
    """Let project_admin create schemas (Postgres's database-level CREATE), as InsForge does: raw SQL and
    custom migrations run as project_admin, and an app that keeps its tables in a schema of its own (read
    with the SDK's `database.schema('analytics')`, which the records API serves once the schema exists)
    creates it there. The schema then belongs to project_admin, so the admin reaches it and grants the
    other roles what they may use.

    Run at every start rather than in a migration: a database-level grant is not copied with a database
    made from a template, nor restored from a dump without its database, and granting twice is harmless."""
    with psycopg.connect(owner_conninfo, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "select current_database(), has_database_privilege('project_admin', current_database(), 'CREATE')"
        ).fetchone()
        assert row is not None
        database, granted = row
        if granted:  # (the usual start: nothing to write, so nothing to race)
            return
        # GRANT rewrites the database's row: processes starting together (several API processes on one
        # database) would meet there, and Postgres refuses one with "tuple concurrently updated". The lock
        # serialises them; the one refused anyway finds the grant made by the other.
        with contextlib.suppress(psycopg.errors.InternalError_), conn.transaction():
            conn.execute("select pg_advisory_xact_lock(hashtext('kilnbase.grant_schema_creation'))")
            conn.execute(
                sql.SQL("grant create on database {} to project_admin").format(sql.Identifier(database))
            )
