"""Versioned SQL migrations: `db/migrations/NNNN_name.sql`, applied in order, each in its own transaction.

Applied versions are recorded in `system.migrations` with a checksum, so a restart applies nothing twice and
an edited, already-applied file is refused rather than silently skipped. A session advisory lock makes
concurrent starts (several API processes on one database) apply each migration exactly once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_LOCK_KEY = 7130_0001

_BOOTSTRAP = """
create schema if not exists system;
create table if not exists system.migrations (
    version integer primary key,
    name text not null,
    checksum text not null,
    applied_at timestamptz not null default now()
);
"""


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover() -> list[Migration]:
    folder = resources.files("kilnbase.db") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


def apply_migrations(conninfo: str, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply what is not yet applied; return what was applied now."""
    pending = discover() if migrations is None else migrations
    applied_now: list[Migration] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Migrations name what they create and call with its schema; built-ins resolve in pg_catalog alone, so
        # no function an app created in `public` runs with the owner's rights (`db/pool.catalog_only`).
        conn.execute("select set_config('search_path', 'pg_catalog', false)")
        conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(_BOOTSTRAP)
            done = {row[0]: row[1] for row in conn.execute("select version, checksum from system.migrations")}
            for migration in pending:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"{migration.version:04d}_{migration.name} changed after it was applied: "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "insert into system.migrations (version, name, checksum) values (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(migration)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
