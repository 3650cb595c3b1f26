"""One embedded Postgres cluster per test session; cheap fresh databases cloned from a migrated template."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from kilnbase.config import Settings
from kilnbase.db.migrate import apply_migrations
from kilnbase.db.pool import create_database
from kilnbase.db.roles import authenticator_conninfo, derived_password, prepare_authenticator
from kilnbase.db.session import Database
from kilnbase.server.embedded_postgres import EmbeddedPostgres

TEMPLATE = "kb_template"


class TestCluster:
    __test__ = False  # a fixture class, not a test

    def __init__(self) -> None:
        # A short path, so the unix socket fits the kernel's limit.
        self.root = Path(tempfile.mkdtemp(prefix="kbt-", dir="/tmp"))
        self.server = EmbeddedPostgres(self.root, secrets.token_hex(16))
        self.server.start()
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(TEMPLATE)))
        apply_migrations(self.conninfo(TEMPLATE))
        # The authenticator role is the cluster's; every app over this cluster derives the same password.
        prepare_authenticator(
            self.conninfo(TEMPLATE), derived_password(self.conninfo(TEMPLATE), ""), managed_by_operator=False
        )

    def conninfo(self, dbname: str) -> str:
        return self.server.conninfo(dbname)

    def create_database(self, prefix: str = "kb") -> str:
        """A new database with every migration applied (a copy of the template); returns its conninfo."""
        name = f"{prefix}_{secrets.token_hex(4)}"
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("create database {} template {}").format(
                    sql.Identifier(name), sql.Identifier(TEMPLATE)
                )
            )
        return self.conninfo(name)

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def database_for(owner_conninfo: str, settings: Settings | None = None) -> Database:
    """A `Database` over a test database, as the app builds it: requests as the authenticator, internal work
    as the owner (pools not yet opened)."""
    request = authenticator_conninfo(owner_conninfo, derived_password(owner_conninfo, ""))
    return create_database(settings or Settings(db_pool_min=1, db_pool_max=4), owner_conninfo, request)
