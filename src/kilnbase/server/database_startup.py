"""Bring the project database up: the embedded cluster or `DATABASE_URL`, checked, migrated, and its
authenticator role ready for the request pool."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from kilnbase.config import Settings
from kilnbase.db.migrate import Migration, apply_migrations
from kilnbase.db.roles import authenticator_password, grant_schema_creation, prepare_authenticator
from kilnbase.keys.project_keys import ProjectKeys
from kilnbase.server.embedded_postgres import EmbeddedPostgres
from kilnbase.server.encryption_key_check import check_encryption_key

MIN_SERVER_VERSION = 150000


class DatabaseStartupError(RuntimeError):
    pass


def _database_url_error(exc: psycopg.Error) -> DatabaseStartupError:
    """What to say when `DATABASE_URL` cannot be used: libpq's reason for a refused connection (which never
    holds the password), but never the text of a connection string it could not parse, since that text
    quotes the URL, password and all."""
    if isinstance(exc, psycopg.OperationalError):
        return DatabaseStartupError(
            f"Cannot connect to DATABASE_URL: {str(exc).strip().splitlines()[0]}. "
            "Check host, port and credentials."
        )
    return DatabaseStartupError(
        "DATABASE_URL is not a PostgreSQL connection string Kilnbase can read. Write it as "
        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (percent-encode @, :, / and % in the password)."
    )


def connect_database_url(conninfo: str) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection to `DATABASE_URL`, or `DatabaseStartupError` saying why there is none."""
    try:
        conninfo_to_dict(conninfo)  # (a string libpq cannot parse: said without quoting it)
        return psycopg.connect(conninfo, connect_timeout=10)
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:
        raise _database_url_error(exc) from None


def check_external_database(conninfo: str) -> None:
    """Kilnbase needs Postgres >= 15 and a superuser (it creates roles and event triggers)."""
    with connect_database_url(conninfo) as conn:
        version = conn.info.server_version
        row = conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()
    if version < MIN_SERVER_VERSION:
        raise DatabaseStartupError(
            f"DATABASE_URL points at PostgreSQL {version // 10000}; Kilnbase needs 15 or newer."
        )
    if not (row and row[0]):
        raise DatabaseStartupError(
            "The DATABASE_URL user must be a superuser: Kilnbase creates the anon, authenticated and "
            "project_admin roles and the event triggers that enable RLS on new tables."
        )


@dataclass(frozen=True)
class OpenedDatabase:
    """A database that is up: the owner's connection string, and the embedded cluster when it is one."""

    conninfo: str
    embedded: EmbeddedPostgres | None
    #: The migrations this start applied.
    applied: tuple[Migration, ...] = ()

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def prepare(
    settings: Settings, keys: ProjectKeys, conninfo: str, progress: Callable[[str], None]
) -> list[Migration]:
    """Migrate, check the encryption key, then give the authenticator role its password (and check it) and
    project_admin the right to create schemas, as the owner. Returns the migrations applied now."""
    applied = apply_migrations(conninfo)
    if applied:
        progress(
            f"Applied {len(applied)} migration(s): " + ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
        )
    check_encryption_key(conninfo, keys, settings)
    prepare_request_roles(settings, keys, conninfo)
    if repoint_encrypted_columns(conninfo):
        progress("Found the encrypted columns again by their names (the database was restored)")
    return applied


def repoint_encrypted_columns(owner_conninfo: str) -> bool:
    """Point the registry of encrypted columns at the columns its names name (migration 0320), at every
    start: a database restored by `kilnbase db restore`, or by any other `pg_restore`, has its tables made
    anew, under other oids. Whether anything changed (nothing, on every other start)."""
    with psycopg.connect(owner_conninfo, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("select system.repoint_encrypted_columns()").fetchone()
    return bool(row and row[0])


def prepare_request_roles(settings: Settings, keys: ProjectKeys, conninfo: str) -> None:
    """Give the authenticator its password (and check it) and project_admin the right to create schemas."""
    prepare_authenticator(
        conninfo,
        authenticator_password(settings, keys, conninfo),
        managed_by_operator=settings.db_authenticator_password is not None,
    )
    grant_schema_creation(conninfo)


def start_database(
    settings: Settings, keys: ProjectKeys, progress: Callable[[str], None]
) -> tuple[str, EmbeddedPostgres | None]:
    """Start the embedded cluster, or check `DATABASE_URL`'s; its conninfo, and the cluster if embedded."""
    if settings.database_url:
        check_external_database(settings.database_url)
        return settings.database_url, None
    embedded = EmbeddedPostgres(settings.data_dir, keys.postgres_password, progress=progress)
    return embedded.start(), embedded


def open_database(settings: Settings, keys: ProjectKeys, progress: Callable[[str], None]) -> OpenedDatabase:
    """Start (or check) the database and prepare it; return its conninfo and the embedded cluster, if any."""
    conninfo, embedded = start_database(settings, keys, progress)
    try:
        applied = prepare(settings, keys, conninfo, progress)
    except BaseException as exc:
        if embedded is not None:
            embedded.stop()
            full = embedded.full_disk_error_for(exc)  # (the data dir's disk: said as every command says it)
            if full is not None:
                raise full from None
        raise
    if embedded is not None:
        embedded.supervise()
    return OpenedDatabase(conninfo, embedded, tuple(applied))
