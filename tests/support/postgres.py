"""One embedded Postgres cluster per test session; cheap fresh databases cloned from a migrated template."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Iterator
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
#: Durability a test cluster does without (each can be changed with a reload). A commit is still written to
#: the kernel before it is answered (`synchronous_commit` stays on), so a Postgres killed by a test loses
#: nothing it had answered; only a crash of the machine could.
_THROWAWAY = ("fsync", "full_page_writes")


@contextlib.contextmanager
def reachable_scratch(prefix: str) -> Iterator[Path]:
    """A new folder under /tmp for a test's data dirs, removed after. Not pytest's `tmp_path`: that is mode
    0700, and as root Kilnbase runs Postgres as `nobody`, who must reach a data dir in it."""
    parent = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    parent.chmod(0o755)
    try:
        yield parent
    finally:
        shutil.rmtree(parent, ignore_errors=True)


class TestCluster:
    __test__ = False  # a fixture class, not a test

    def __init__(self) -> None:
        # A short path, so the unix socket fits the kernel's limit.
        self.root = Path(tempfile.mkdtemp(prefix="kbt-", dir="/tmp"))
        self.server = EmbeddedPostgres(self.root, secrets.token_hex(16))
        self.server.start()
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            # A throwaway cluster: nothing in it has to outlive the machine, so no commit waits for the disk.
            # With fsync on, the suite's last act per worker (stopping a cluster of some 200 databases) spent
            # up to 30 s in its shutdown checkpoint and 25 s more deleting what it had written.
            for setting in _THROWAWAY:
                conn.execute(sql.SQL("alter system set {} = off").format(sql.Identifier(setting)))
            conn.execute("select pg_reload_conf()")
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(TEMPLATE)))
        apply_migrations(self.conninfo(TEMPLATE))
        # The authenticator role is the cluster's; every app over this cluster derives the same password.
        prepare_authenticator(
            self.conninfo(TEMPLATE), derived_password(self.conninfo(TEMPLATE), ""), managed_by_operator=False
        )

    def conninfo(self, dbname: str) -> str:
        return self.server.conninfo(dbname)

    def create_database(self, prefix: str = "kb") -> str:
        """A new database with every migration applied (a copy of the template); returns its conninfo.

        Copied file by file: the default since Postgres 15 (WAL_LOG) writes every page through the WAL, which
        costs more for a template this small, and without fsync FILE_COPY's checkpoint is cheap."""
        name = f"{prefix}_{secrets.token_hex(4)}"
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("create database {} template {} strategy file_copy").format(
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
