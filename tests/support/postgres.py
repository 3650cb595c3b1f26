"""One embedded Postgres cluster per test session; cheap fresh databases cloned from a migrated template."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from kilnbase.db.migrate import apply_migrations
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
